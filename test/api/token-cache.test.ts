import { describe, expect, it } from "vitest";
import { cacheVerifiedTokens } from "../../api/middleware/auth/token-cache.ts";
import {
  InvalidTokenError,
  type TokenVerifier,
  type VerifiedToken,
} from "../../api/middleware/auth/verifier.ts";

function countingVerifier(expiresAt: number): { verify: TokenVerifier; calls: string[] } {
  const calls: string[] = [];
  const verify: TokenVerifier = async (token) => {
    calls.push(token);
    if (token.startsWith("bad")) throw new InvalidTokenError("bad token");
    const verified: VerifiedToken = {
      subject: token,
      scopes: new Set(["counters:write"]),
      prefixes: undefined,
      expiresAt,
    };
    return verified;
  };
  return { verify, calls };
}

describe("verified-token cache", () => {
  it("verifies a token once and serves it from memory until it expires", async () => {
    let now = 1_000;
    const { verify, calls } = countingVerifier(5_000);
    const cached = cacheVerifiedTokens(verify, { now: () => now });
    expect((await cached("a")).subject).toBe("a");
    expect((await cached("a")).subject).toBe("a");
    expect(calls).toEqual(["a"]);
    now = 5_000; // exp reached: verified again (and a real verifier would now refuse it)
    await cached("a");
    expect(calls).toEqual(["a", "a"]);
  });

  it("never caches a failure", async () => {
    const { verify, calls } = countingVerifier(Number.MAX_SAFE_INTEGER);
    const cached = cacheVerifiedTokens(verify);
    await expect(cached("bad-1")).rejects.toThrow(InvalidTokenError);
    await expect(cached("bad-1")).rejects.toThrow(InvalidTokenError);
    expect(calls).toEqual(["bad-1", "bad-1"]);
  });

  it("keeps at most maxEntries tokens, dropping the least recently used", async () => {
    const { verify, calls } = countingVerifier(Number.MAX_SAFE_INTEGER);
    const cached = cacheVerifiedTokens(verify, { maxEntries: 2 });
    for (const token of ["a", "b", "a", "c", "a", "b"]) await cached(token);
    // "c" evicted "b", the one unused the longest (not "a", verified first but used since).
    expect(calls).toEqual(["a", "b", "c", "b"]);
  });

  it("keeps at most maxBytes, however few the tokens: large tokens cannot grow a worker's memory", async () => {
    const { verify, calls } = countingVerifier(Number.MAX_SAFE_INTEGER);
    // Each 10 KB token with a 10 KB subject is about 40 KB in memory: two fit in 100 KB, three do not.
    const cached = cacheVerifiedTokens(verify, { maxBytes: 100_000 });
    const big = (name: string) => name.repeat(10_000);
    for (const token of [big("a"), big("b"), big("c"), big("a")]) await cached(token);
    expect(calls.map((token) => token[0])).toEqual(["a", "b", "c", "a"]);
  });

  it("verifies a token again after maxAgeMs, even long before its exp", async () => {
    let now = 1_000;
    const { verify, calls } = countingVerifier(Number.MAX_SAFE_INTEGER);
    const cached = cacheVerifiedTokens(verify, { maxAgeMs: 60_000, now: () => now });
    await cached("a");
    now += 59_000;
    await cached("a");
    expect(calls).toEqual(["a"]);
    now += 2_000;
    await cached("a");
    expect(calls).toEqual(["a", "a"]);
  });
});
