import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it, onTestFinished } from "vitest";
import { OpenBatch } from "../../client/src/batch.ts";
import {
  TallyClient,
  TallyClosedError,
  TallyError,
  TallyOutcomeUnknownError,
  TallyValidationError,
} from "../../client/src/index.ts";
import { backoffMs, DEFAULT_RETRY, serverDelayMs } from "../../client/src/retry.ts";
import { MAX_KEY_BYTES } from "../../client/src/rules.ts";
import { BearerToken } from "../../client/src/token.ts";
import { MAX_KEY_BYTES as SERVICE_MAX_KEY_BYTES } from "../../lib/settings.ts";
import { freePort } from "../../tools/servers/ports.ts";

// The client's pure parts. Everything that talks to the service is tested against a real one
// (client.test.ts, faults.test.ts).

const noCall = { resolve() {}, reject() {} };

function jwtWithExp(exp: number): string {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256" })}.${part({ sub: "c", exp })}.signature`;
}

describe("the client's validation", () => {
  // A client pointed nowhere: a call that breaks a rule must reject before anything is sent or buffered.
  const client = new TallyClient({ url: "http://127.0.0.1:9", token: "t", maxKeyLength: 10 });

  it.each([
    ["", 1, "key must not be empty"],
    ["k".repeat(11), 1, "key must be at most 10 characters"],
    ["a\u0000b", 1, "key must not contain the NUL character"],
    ["\ud800", 1, "key must be well-formed Unicode (no lone surrogates)"],
    ["k", 1.5, "value must be an integer"],
    ["k", Number.NaN, "value must be an integer"],
    ["k", 2 ** 53, "value must be within ±(2^53−1)"],
  ])("rejects %j, %d at once: %s", async (key, value, message) => {
    await expect(client.increment(key, value)).rejects.toThrow(new TallyValidationError(message));
    expect(client.stats.buffered).toBe(0);
  });

  it("counts code points, not UTF-16 units, and bytes as the service does", async () => {
    expect(MAX_KEY_BYTES).toBe(SERVICE_MAX_KEY_BYTES);
    const wide = new TallyClient({ url: "http://127.0.0.1:9", token: "t", maxKeyLength: 2048 });
    await expect(wide.increment("😀".repeat(513))).rejects.toThrow("at most 2048 bytes");
    // Ten surrogate pairs are ten characters: within maxKeyLength 10. Closed, so nothing is sent.
    await client.close();
    await expect(client.increment("😀".repeat(10))).rejects.toBeInstanceOf(TallyClosedError);
  });

  it("refuses options out of range when it is made", () => {
    expect(() => new TallyClient({ url: "http://x", token: "t", maxBatchSize: 0 })).toThrow(
      "maxBatchSize must be an integer of at least 1",
    );
    expect(() => new TallyClient({ url: "http://x", token: "t", retry: { budgetMs: -1 } })).toThrow(
      "retry.budgetMs must be a whole number of milliseconds",
    );
  });
});

describe("OpenBatch", () => {
  it("sums calls for one key into one item until the sum would leave the safe integers", () => {
    const batch = new OpenBatch();
    batch.add("a", 2, noCall);
    batch.add("b", 1, noCall);
    batch.add("a", 3, noCall);
    batch.add("big", Number.MAX_SAFE_INTEGER, noCall);
    batch.add("big", 1, noCall);
    const sealed = batch.seal();
    expect(sealed.increments).toEqual([
      { key: "a", value: 5 },
      { key: "b", value: 1 },
      { key: "big", value: Number.MAX_SAFE_INTEGER },
      { key: "big", value: 1 },
    ]);
    expect(sealed.calls).toBe(5);
    expect(JSON.parse(sealed.body)).toEqual({ increments: sealed.increments });
    expect(sealed.idempotencyKey).toMatch(/^[0-9a-f-]{36}$/);
    expect(batch.seal().idempotencyKey).not.toBe(sealed.idempotencyKey);
  });
});

describe("retry timing", () => {
  it("backs off exponentially with full jitter, capped", () => {
    expect(backoffMs(DEFAULT_RETRY, 1, () => 0.999)).toBe(49);
    expect(backoffMs(DEFAULT_RETRY, 3, () => 0.5)).toBe(100);
    expect(backoffMs(DEFAULT_RETRY, 30, () => 0.999)).toBe(1_998);
    expect(backoffMs(DEFAULT_RETRY, 4, () => 0)).toBe(0);
  });

  it("reads Retry-After in seconds or as a date, else the RateLimit reset", () => {
    const now = Date.parse("2026-11-29T10:00:00Z");
    expect(serverDelayMs(new Headers({ "retry-after": "5" }), now)).toBe(5_000);
    expect(serverDelayMs(new Headers({ "retry-after": "Sun, 29 Nov 2026 10:00:03 GMT" }), now)).toBe(3_000);
    expect(serverDelayMs(new Headers({ ratelimit: '"default";r=0;t=7' }), now)).toBe(7_000);
    expect(serverDelayMs(new Headers(), now)).toBeUndefined();
  });
});

describe("BearerToken", () => {
  it("fetches once, shares the fetch, and fetches again shortly before exp and after its token is refused", async () => {
    let fetched = 0;
    const exp = Math.floor(Date.now() / 1000) + 600;
    const token = new BearerToken(async () => {
      fetched += 1;
      return jwtWithExp(exp + fetched);
    });
    const [a, b] = await Promise.all([token.get(1_000), token.get(1_000)]);
    expect(a).toBe(b);
    expect(fetched).toBe(1);
    await token.get(1_000, (exp - 60) * 1000);
    expect(fetched).toBe(1);
    const second = await token.get(1_000, (exp - 10) * 1000);
    expect(fetched).toBe(2);
    // A 401 for a token already replaced (another batch refreshed it) keeps the new one.
    token.invalidate(a);
    expect(await token.get(1_000)).toBe(second);
    token.invalidate(second);
    await token.get(1_000);
    expect(fetched).toBe(3);
    expect(token.refreshable).toBe(true);
    expect(new BearerToken("fixed").refreshable).toBe(false);
  });

  it("fails the attempt when the source does not answer in time, and asks again next time", async () => {
    let calls = 0;
    const token = new BearerToken(() => {
      calls += 1;
      return calls === 1 ? new Promise<string>(() => {}) : "late-but-fine";
    });
    await expect(token.get(50)).rejects.toThrow("did not answer within 50 ms");
    expect(await token.get(50)).toBe("late-but-fine");
  });
});

/**
 * An HTTP endpoint that answers each request with the next status of `script`: a proxy or a service
 * misbehaving in one precise way, which the real service cannot be made to do on cue. Records what it got.
 */
async function scripted(script: number[]): Promise<{ url: string; seen: { key: string; body: string }[] }> {
  const seen: { key: string; body: string }[] = [];
  const server = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk: Buffer) => {
      body += chunk.toString("utf8");
    });
    request.on("end", () => {
      seen.push({ key: String(request.headers["idempotency-key"]), body });
      const status = script[Math.min(seen.length - 1, script.length - 1)] ?? 500;
      response.writeHead(status, { "content-type": "application/problem+json" });
      response.end(status === 202 ? "" : JSON.stringify({ status, code: `code_${status}` }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  onTestFinished(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

describe("the client's retries against a scripted endpoint", () => {
  const fast = { budgetMs: 2_000, baseDelayMs: 1, maxDelayMs: 5 };

  it("sends the same Idempotency-Key and body on every attempt, and settles even when onError throws", async () => {
    const { url, seen } = await scripted([503, 503, 202]);
    const client = new TallyClient({
      url,
      token: "t",
      retry: fast,
      onError: () => {
        throw new Error("a broken hook");
      },
    });
    await client.increment("k", 2);
    await client.close();
    expect(seen).toHaveLength(3);
    expect(new Set(seen.map((request) => request.key)).size).toBe(1);
    expect(new Set(seen.map((request) => request.body))).toEqual(
      new Set(['{"increments":[{"key":"k","value":2}]}']),
    );
  });

  it("retries a refused connection as the safe case it is: the outcome is not unknown when nothing was sent", async () => {
    // Nothing listens on a port just freed: every attempt is refused before a byte is sent.
    const client = new TallyClient({
      url: `http://127.0.0.1:${await freePort()}`,
      token: "t",
      retry: { ...fast, budgetMs: 200 },
    });
    const failure = await client.increment("k", 1).catch((error: unknown) => error);
    await client.close();
    expect(failure).toBeInstanceOf(TallyError);
    expect(failure).not.toBeInstanceOf(TallyOutcomeUnknownError);
    expect(client.stats.retries).toBeGreaterThan(1);
  });

  it("gives up when its time budget is spent, not after a count of attempts", async () => {
    const { url, seen } = await scripted([503]);
    const client = new TallyClient({
      url,
      token: "t",
      retry: { budgetMs: 300, baseDelayMs: 10, maxDelayMs: 20 },
    });
    const startedAt = performance.now();
    const failure = await client.increment("k", 1).catch((error: unknown) => error);
    await client.close();
    expect(failure).toBeInstanceOf(TallyOutcomeUnknownError);
    expect(performance.now() - startedAt).toBeGreaterThanOrEqual(250);
    expect(seen.length).toBeGreaterThan(5);
  });

  it("reports an unknown outcome when an attempt was ambiguous, whatever the last answer says", async () => {
    // A 503 may have been applied; a 403 from a proxy afterwards proves nothing about it.
    const { url } = await scripted([503, 403]);
    const client = new TallyClient({ url, token: "t", retry: fast });
    const failure = await client.increment("k", 1).catch((error: unknown) => error);
    await client.close();
    expect(failure).toBeInstanceOf(TallyOutcomeUnknownError);
    expect((failure as TallyOutcomeUnknownError).attempts).toBe(2);
  });
});
