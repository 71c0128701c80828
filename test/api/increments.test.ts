import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { allShardKeys, shardKeys } from "../../lib/redis/keyspace.ts";
import { createTestApi, readProblem, type TestApi } from "../support/api.ts";

// POST /increments: many increments in one request, against the shared Redis.

let api: TestApi;
beforeAll(async () => {
  api = await createTestApi({
    SYNC_SHARDS: "4",
    MAX_BATCH_SIZE: "5",
    RATE_LIMIT_POINTS: "12",
    RATE_LIMIT_DURATION_S: "60",
  });
});
afterAll(() => api.close());

function send(body: unknown, token: string, headers: Record<string, string> = {}) {
  return api.node.app.request("/increments", {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

/** The key's total over every shard's dirty hash. */
async function pending(key: string, target = api, shards = 4): Promise<number> {
  const values = await Promise.all(
    allShardKeys(target.prefix, shards).map((keys) => target.node.redis.hget(keys.dirty, key)),
  );
  return values.reduce((sum, value) => sum + Number(value ?? 0), 0);
}

describe("POST /increments", () => {
  it("applies every increment, each in its key's shard; a key sent twice adds up", async () => {
    const token = await api.token();
    const increments = [
      { key: "batch:a", value: 3 },
      { key: "batch:b", value: -2 },
      { key: "batch:a", value: 4 },
      { key: "batch:c", value: 1 },
    ];
    const response = await send({ increments }, token);
    expect(response.status).toBe(202);
    expect(await response.text()).toBe("");
    expect([await pending("batch:a"), await pending("batch:b"), await pending("batch:c")]).toEqual([
      7, -2, 1,
    ]);
  });

  it("refuses the whole batch when one increment is invalid, naming each failing one, and stores nothing", async () => {
    const token = await api.token();
    const response = await send(
      {
        increments: [
          { key: "valid", value: 1 },
          { key: "", value: 1 },
          { key: "x", value: 1.5 },
        ],
      },
      token,
    );
    expect(response.status).toBe(400);
    const problem = await readProblem(response);
    expect(problem.code).toBe("invalid_body");
    expect(problem.errors).toEqual([
      { pointer: "/increments/1/key", detail: "key must not be empty" },
      { pointer: "/increments/2/value", detail: "value must be an integer" },
    ]);
    expect(await pending("valid")).toBe(0);
  });

  it.each([
    ["no increment", { increments: [] }, "increments must hold at least one increment"],
    [
      "more than MAX_BATCH_SIZE",
      { increments: Array.from({ length: 6 }, (_, i) => ({ key: `over:${i}`, value: 1 })) },
      "increments must hold at most 5 increments (MAX_BATCH_SIZE)",
    ],
    ["no increments field", {}, "increments is required"],
    [
      "an unknown field",
      { increments: [{ key: "k", value: 1 }], extra: 1 },
      'unexpected field "extra": the body has only increments',
    ],
  ])("answers 400 for %s", async (_name, body, detail) => {
    const response = await send(body, await api.token());
    expect(response.status).toBe(400);
    expect((await readProblem(response)).detail).toBe(detail);
  });

  it("spends one point of the quota per increment, and refuses a batch that does not fit with nothing applied", async () => {
    const token = await api.token({ subject: "batch-quota" });
    const first = await send(
      { increments: Array.from({ length: 5 }, (_, i) => ({ key: `quota:${i}`, value: 1 })) },
      token,
    );
    expect(first.status).toBe(202);
    expect(first.headers.get("ratelimit")).toBe('"default";r=7;t=60');
    const second = await send(
      { increments: Array.from({ length: 5 }, (_, i) => ({ key: `quota:${i}`, value: 1 })) },
      token,
    );
    expect(second.status).toBe(202);
    // 10 of 12 points spent: a batch of 3 does not fit.
    const refused = await send(
      { increments: Array.from({ length: 3 }, (_, i) => ({ key: `refused:${i}`, value: 1 })) },
      token,
    );
    expect(refused.status).toBe(429);
    expect((await readProblem(refused)).code).toBe("rate_limited");
    expect(refused.headers.get("retry-after")).not.toBeNull();
    expect(await pending("refused:0")).toBe(0);
    expect(await pending("quota:0")).toBe(2);
  });

  it("applies a batch with an Idempotency-Key once, replays a retry, and refuses the key with another body", async () => {
    const token = await api.token({ subject: "batch-idempotent" });
    const body = {
      increments: [
        { key: "once:a", value: 2 },
        { key: "once:b", value: 5 },
        { key: "once:c", value: 1 },
      ],
    };
    const first = await send(body, token, { "idempotency-key": "batch-1" });
    expect(first.status).toBe(202);
    expect(first.headers.get("idempotent-replayed")).toBeNull();
    const retry = await send(body, token, { "idempotency-key": "batch-1" });
    expect(retry.status).toBe(202);
    expect(retry.headers.get("idempotent-replayed")).toBe("true");
    expect([await pending("once:a"), await pending("once:b"), await pending("once:c")]).toEqual([2, 5, 1]);

    const other = await send({ increments: [{ key: "once:a", value: 3 }] }, token, {
      "idempotency-key": "batch-1",
    });
    expect(other.status).toBe(422);
    expect((await readProblem(other)).code).toBe("idempotency_key_reused");
    expect(await pending("once:a")).toBe(2);
  });
});

describe("POST /increments on one shard", () => {
  let single: TestApi;
  beforeAll(async () => {
    single = await createTestApi({ SYNC_SHARDS: "1" });
  });
  afterAll(() => single.close());

  it("refuses the whole part when one total would leave 64 bits, naming the increment, with nothing applied", async () => {
    const token = await single.token();
    const dirty = shardKeys(single.prefix, 0).dirty;
    const nearMax = (2n ** 63n - 10n).toString();
    await single.node.redis.hset(dirty, "edge", nearMax);
    const response = await single.node.app.request("/increments", {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      body: JSON.stringify({
        increments: [
          { key: "beside", value: 1 },
          { key: "edge", value: 11 },
        ],
      }),
    });
    expect(response.status).toBe(422);
    const problem = await readProblem(response);
    expect(problem.code).toBe("counter_out_of_range");
    expect(problem.errors).toEqual([
      {
        pointer: "/increments/1/value",
        detail: "the pending total for this key would leave the 64-bit range",
      },
    ]);
    expect(await single.node.redis.hmget(dirty, "edge", "beside")).toEqual([nearMax, null]);
  });

  it("with an Idempotency-Key, a refused part is not recorded: the same batch applies once it fits", async () => {
    const token = await single.token();
    const dirty = shardKeys(single.prefix, 0).dirty;
    await single.node.redis.hset(dirty, "edge-once", (2n ** 63n - 10n).toString());
    const batch = () =>
      single.node.app.request("/increments", {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "idempotency-key": "edge-batch" },
        body: JSON.stringify({
          increments: [
            { key: "beside-once", value: 1 },
            { key: "edge-once", value: 11 },
          ],
        }),
      });
    expect((await batch()).status).toBe(422);
    expect(await single.node.redis.hget(dirty, "beside-once")).toBeNull();
    await single.node.redis.hset(dirty, "edge-once", "0");
    expect((await batch()).status).toBe(202);
    const replay = await batch();
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(await single.node.redis.hmget(dirty, "edge-once", "beside-once")).toEqual(["11", "1"]);
  });
});
