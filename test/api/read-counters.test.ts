import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_READ_KEYS } from "../../api/operations/read-counters.ts";
import { Keyspace, shardKeys } from "../../lib/redis/keyspace.ts";
import { createTestApi, readProblem, type TestApi } from "../support/api.ts";

let api: TestApi;
let token: string;
beforeAll(async () => {
  api = await createTestApi({ SYNC_SHARDS: "4" });
  token = await api.token();
});
afterAll(() => api.close());

const readMany = (body: unknown, bearer = token) =>
  api.node.app.request("/read", {
    method: "POST",
    headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });

const readOne = async (key: string) =>
  (
    await api.node.app.request(`/counters/${encodeURIComponent(key)}`, {
      headers: { authorization: `Bearer ${token}` },
    })
  ).text();

describe("POST /read", () => {
  it("answers every key as GET /counters/{key} does, in the order asked, unknown keys as zeros", async () => {
    await api.increment({ key: "many-a", value: 3 }, token);
    await api.increment({ key: "many-b/ключ 🦄", value: -2 }, token);
    await api.node.pool.query(
      "INSERT INTO counters (key, value, updated_at) VALUES ('many-big', 9223372036854775000, now())",
    );

    const response = await readMany({
      keys: ["many-b/ключ 🦄", "never-counted", "many-big", "many-a", "many-a"],
    });

    expect(response.status).toBe(200);
    const text = await response.text();
    expect(text).toContain('"persisted":9223372036854775000');
    const { counters } = JSON.parse(text) as { counters: Record<string, unknown>[] };
    expect(counters.map((counter) => [counter.key, counter.total])).toEqual([
      ["many-b/ключ 🦄", -2],
      ["never-counted", 0],
      ["many-big", 9223372036854775000],
      ["many-a", 3],
      ["many-a", 3],
    ]);
    expect(counters[1]).toEqual({
      key: "never-counted",
      persisted: 0,
      pending: 0,
      total: 0,
      persistedAsOf: null,
    });
    // Each known key reads exactly as its own GET answers it.
    for (const key of ["many-a", "many-b/ключ 🦄"])
      expect(JSON.stringify(counters.find((counter) => counter.key === key))).toBe(await readOne(key));
  });

  it("adds each key's persisted, flushing and dirty deltas without counting a committed batch twice", async () => {
    const { shard } = new Keyspace(api.prefix, 4).shardOf("many-mixed");
    const keys = shardKeys(api.prefix, shard);
    await api.node.pool.query(
      "INSERT INTO counters (key, value, updated_at) VALUES ('many-mixed', 100, now())",
    );
    await api.node.pool.query(
      `INSERT INTO sync_state (shard, synced_through, last_seq) VALUES (${shard}, now(), 4)
         ON CONFLICT (shard) DO UPDATE SET last_seq = 4`,
    );
    await api.node.redis.hset(keys.flushing, "many-mixed", "20");
    await api.node.redis.hset(keys.flushingMeta, { batch: "b5", seq: "5", swapped_at: "0" });
    await api.node.redis.set(keys.seq, "5");
    await api.node.redis.hset(keys.dirty, "many-mixed", "3");
    const totals = async () =>
      (
        (await (await readMany({ keys: ["many-mixed", "many-a"] })).json()) as {
          counters: { total: number }[];
        }
      ).counters.map((counter) => counter.total);
    expect(await totals()).toEqual([123, 3]);

    // Batch 5 committed, its flushing hash not yet deleted: still 123, not 143.
    await api.node.pool.query("UPDATE counters SET value = 120 WHERE key = 'many-mixed'");
    await api.node.pool.query(`UPDATE sync_state SET last_seq = 5 WHERE shard = ${shard}`);
    expect(await totals()).toEqual([123, 3]);
    await api.node.redis.del(keys.flushing, keys.flushingMeta);
  });

  it(`takes up to ${MAX_READ_KEYS} keys, and refuses more, none or a malformed body with 400 saying why`, async () => {
    const keys = Array.from({ length: MAX_READ_KEYS }, (_, index) => `bulk-${index}`);
    // A client of its own: the other tests have spent some of the default quota.
    const full = await readMany({ keys }, await api.token({ subject: "bulk-reader" }));
    expect(full.status).toBe(200);
    expect(((await full.json()) as { counters: unknown[] }).counters).toHaveLength(MAX_READ_KEYS);

    for (const [body, detail] of [
      [{ keys: [...keys, "one-more"] }, `keys must hold at most ${MAX_READ_KEYS} keys`],
      [{ keys: [] }, "keys must hold at least one key"],
      [{}, "keys is required"],
      [{ keys: "a" }, "keys must be an array"],
      [{ keys: ["a"], extra: 1 }, 'unexpected field "extra": the body has only keys'],
      [{ keys: ["a\u0000b"] }, "key must not contain the NUL character"],
    ] as const) {
      const response = await readMany(body);
      expect(response.status, JSON.stringify(body)).toBe(400);
      expect(await readProblem(response)).toMatchObject({ code: "invalid_body", detail });
    }
  });

  it("needs counters:read, and spends one point of the quota per key", async () => {
    const writeOnly = await api.token({ scopes: ["counters:write"] });
    expect((await readMany({ keys: ["a"] }, writeOnly)).status).toBe(403);

    const limited = await createTestApi({ RATE_LIMIT_POINTS: "10", RATE_LIMIT_DURATION_S: "60" });
    try {
      const request = async (subject: string, count: number) =>
        limited.node.app.request("/read", {
          method: "POST",
          headers: {
            authorization: `Bearer ${await limited.token({ subject })}`,
            "content-type": "application/json",
          },
          body: JSON.stringify({ keys: Array.from({ length: count }, (_, index) => `k${index}`) }),
        });
      expect((await request("ten", 10)).status).toBe(200);
      expect((await request("ten", 1)).status).toBe(429);
      expect((await request("eleven", 11)).status).toBe(429);
    } finally {
      await limited.close();
    }
  });
});
