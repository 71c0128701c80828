import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mintToken } from "../../lib/tokens.ts";
import { createTestApi, readProblem, TEST_SECRET, type TestApi } from "../support/api.ts";

// Tokens confined to key prefixes (the tally_prefixes claim): every operation checks every key it touches,
// and a request with one key outside does nothing at all. The keys below are the ones an attacker would
// try: case, look-alikes, normalisation, pattern characters, the prefix itself.

let api: TestApi;
beforeAll(async () => {
  api = await createTestApi({ SYNC_SHARDS: "4", RATE_LIMIT_POINTS: "10000" });
});
afterAll(() => api.close());

const request = (path: string, token: string, init: { method?: string; body?: unknown } = {}) =>
  api.node.app.request(path, {
    method: init.method ?? "GET",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
  });

const increment = (token: string, key: string, value = 1) =>
  request("/increment", token, { method: "POST", body: { key, value } });

/** The key's total as an unconfined token reads it (0 when nothing was counted). */
async function totalOf(key: string): Promise<number> {
  const response = await request(`/counters/${encodeURIComponent(key)}`, await api.token());
  if (response.status === 404) return 0;
  return ((await response.json()) as { total: number }).total;
}

describe("a token confined to prefixes", () => {
  it("writes and reads keys inside them, a key equal to a prefix included", async () => {
    const token = await api.token({ prefixes: ["team-a:", "shared/"] });
    for (const key of ["team-a:x", "team-a:", "shared/x/y"]) {
      expect((await increment(token, key, 2)).status, key).toBe(202);
      expect((await request(`/counters/${encodeURIComponent(key)}`, token)).status, key).toBe(200);
    }
  });

  it.each([
    ["case", "Team-A:x"],
    ["a Cyrillic look-alike", "team-\u0430:x"],
    ["a prefix of the prefix", "team-a"],
    ["another team", "team-b:x"],
    ["a fullwidth colon", "team-a\uff1ax"],
  ])("refuses %s (%s) with 403 and stores nothing", async (_, key) => {
    const token = await api.token({ prefixes: ["team-a:"] });
    const response = await increment(token, key);
    expect(response.status).toBe(403);
    const problem = await readProblem(response);
    expect(problem).toMatchObject({ code: "namespace_forbidden", errors: [{ pointer: "/key" }] });
    expect(problem.detail).toContain('"team-a:"');
    expect(await totalOf(key)).toBe(0);
    expect((await request(`/counters/${encodeURIComponent(key)}`, token)).status).toBe(403);
  });

  it("compares without Unicode normalisation: a decomposed é is not a composed one", async () => {
    const composed = "caf\u00e9:";
    const token = await api.token({ prefixes: [composed] });
    expect((await increment(token, `${composed}x`)).status).toBe(202);
    expect((await increment(token, "cafe\u0301:x")).status).toBe(403);
  });

  it("treats %, _ and * as themselves, not as patterns", async () => {
    const token = await api.token({ prefixes: ["p%", "q_", "r*"] });
    expect((await increment(token, "p%1")).status).toBe(202);
    expect((await increment(token, "q_1")).status).toBe(202);
    expect((await increment(token, "r*1")).status).toBe(202);
    for (const key of ["pa", "p", "qa", "ra", "r"])
      expect((await increment(token, key)).status, key).toBe(403);
  });

  it("with an empty list, may touch no key at all", async () => {
    const token = await api.token({ prefixes: [] });
    const response = await increment(token, "anything");
    expect(response.status).toBe(403);
    expect((await readProblem(response)).detail).toContain("confined to no key at all");
  });

  it("refuses a whole batch with one key outside, naming it, and applies none of it", async () => {
    const token = await api.token({ prefixes: ["team-a:"] });
    const increments = [
      { key: "team-a:batch-1", value: 5 },
      { key: "team-b:batch", value: 5 },
      { key: "team-a:batch-2", value: 5 },
    ];
    const response = await request("/increments", token, { method: "POST", body: { increments } });
    expect(response.status).toBe(403);
    expect((await readProblem(response)).errors).toEqual([
      { pointer: "/increments/1/key", detail: "outside the token's prefixes" },
    ]);
    for (const { key } of increments) expect(await totalOf(key), key).toBe(0);
  });

  it("refuses a read of many keys with one outside, naming it, and answers none of them", async () => {
    const token = await api.token({ prefixes: ["team-a:"] });
    const inside = await request("/read", token, { method: "POST", body: { keys: ["team-a:x", "team-a:"] } });
    expect(inside.status).toBe(200);
    const response = await request("/read", token, {
      method: "POST",
      body: { keys: ["team-a:x", "team-a:", "Team-A:x"] },
    });
    expect(response.status).toBe(403);
    expect((await readProblem(response)).errors).toEqual([
      { pointer: "/keys/2", detail: "outside the token's prefixes" },
    ]);
  });

  it("keeps a token without the claim unconfined", async () => {
    const token = await api.token();
    expect((await increment(token, "anywhere")).status).toBe(202);
  });
});

describe("the tally_prefixes claim", () => {
  it.each([
    ["an empty string, which every key starts with", [""]],
    ["a string with NUL", ["a\u0000"]],
    ["a lone surrogate", ["a\ud800"]],
    ["not an array", "team-a:"],
    ["a number in the list", ["a", 5]],
    ["more than 100 prefixes", Array.from({ length: 101 }, (_, i) => `p${i}:`)],
  ])("refuses a token whose claim holds %s with 401", async (_, claim) => {
    // mintToken checks what it signs; an attacker's token does not go through it.
    const { SignJWT } = await import("jose");
    const token = await new SignJWT({ scope: "counters:write", tally_prefixes: claim })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject("attacker")
      .setIssuedAt()
      .setExpirationTime("1h")
      .sign(new TextEncoder().encode(TEST_SECRET));
    const response = await increment(token, "a");
    expect(response.status).toBe(401);
    expect((await readProblem(response)).detail).toContain("tally_prefixes");
  });

  it("is what npm run token writes", async () => {
    const token = await mintToken({
      secret: TEST_SECRET,
      subject: "s",
      scopes: ["counters:write"],
      prefixes: ["x:"],
    });
    expect((await increment(token, "x:1")).status).toBe(202);
    expect((await increment(token, "y:1")).status).toBe(403);
  });
});
