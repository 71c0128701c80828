import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestApi, readProblem, type TestApi } from "../support/api.ts";

let api: TestApi;
beforeAll(async () => {
  api = await createTestApi({ RATE_LIMIT_POINTS: "3", RATE_LIMIT_DURATION_S: "60" });
});
afterAll(() => api.close());

describe("per-client rate limit", () => {
  it("answers 429 with Retry-After and the IETF RateLimit fields once the quota is spent", async () => {
    const token = await api.token();
    const remaining: (string | null)[] = [];
    for (let i = 0; i < 3; i++) {
      const response = await api.increment({ key: "rl", value: 1 }, token);
      expect(response.status).toBe(202);
      expect(response.headers.get("ratelimit-policy")).toBe('"default";q=3;w=60');
      remaining.push(response.headers.get("ratelimit"));
    }
    expect(remaining.map((value) => value?.match(/r=(\d+)/)?.[1])).toEqual(["2", "1", "0"]);

    const limited = await api.increment({ key: "rl", value: 1 }, token);
    expect(limited.status).toBe(429);
    expect(limited.headers.get("content-type")).toBe("application/problem+json");
    expect((await readProblem(limited)).code).toBe("rate_limited");
    const retryAfter = Number(limited.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(limited.headers.get("ratelimit")).toMatch(/^"default";r=0;t=\d+$/);
    expect(limited.headers.get("ratelimit-policy")).toBe('"default";q=3;w=60');
  });

  it("keeps separate quotas per client (the token's sub)", async () => {
    const alice = await api.token({ subject: "alice" });
    const bob = await api.token({ subject: "bob" });
    for (let i = 0; i < 3; i++) expect((await api.increment({ key: "a", value: 1 }, alice)).status).toBe(202);
    expect((await api.increment({ key: "a", value: 1 }, alice)).status).toBe(429);
    expect((await api.increment({ key: "b", value: 1 }, bob)).status).toBe(202);
    // A new token for the same client shares the client's quota.
    expect((await api.increment({ key: "a", value: 1 }, await api.token({ subject: "alice" }))).status).toBe(
      429,
    );
  });

  it("counts rejected bodies too, so garbage cannot be sent for free", async () => {
    const token = await api.token();
    for (let i = 0; i < 3; i++) expect((await api.increment("not json", token)).status).toBe(400);
    expect((await api.increment({ key: "x", value: 1 }, token)).status).toBe(429);
  });

  it("works after Redis forgot its scripts, with concurrent requests (NOSCRIPT is retried)", async () => {
    const token = await api.token();
    await api.node.redis.script("FLUSH");
    const responses = await Promise.all(
      Array.from({ length: 5 }, () => api.increment({ key: "flush", value: 1 }, token)),
    );
    expect(responses.map((response) => response.status).sort()).toEqual([202, 202, 202, 429, 429]);
  });
});

describe("RATE_LIMIT_DISABLED=true", () => {
  let unlimited: TestApi;
  beforeAll(async () => {
    unlimited = await createTestApi({ RATE_LIMIT_DISABLED: "true", RATE_LIMIT_POINTS: "2" });
  });
  afterAll(() => unlimited.close());

  it("charges no quota and sends no RateLimit fields, for single increments and batches alike", async () => {
    const token = await unlimited.token();
    for (let i = 0; i < 5; i++) {
      const response = await unlimited.increment({ key: "free", value: 1 }, token);
      expect(response.status).toBe(202);
      expect(response.headers.get("ratelimit")).toBeNull();
      expect(response.headers.get("ratelimit-policy")).toBeNull();
    }
    const batch = await unlimited.node.app.request("/increments", {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ increments: Array.from({ length: 10 }, () => ({ key: "free", value: 1 })) }),
    });
    expect(batch.status).toBe(202);
    expect(await unlimited.node.redis.keys(`${unlimited.prefix}:ratelimit*`)).toEqual([]);
  });
});
