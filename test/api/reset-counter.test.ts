import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Keyspace, shardKeys } from "../../lib/redis/keyspace.ts";
import { createTestApi, readProblem, type TestApi } from "../support/api.ts";

let api: TestApi;
let token: string;
beforeAll(async () => {
  api = await createTestApi({ SYNC_SHARDS: "4", RATE_LIMIT_POINTS: "100000" });
  token = await api.token({ scopes: ["counters:write", "counters:read", "counters:reset"] });
});
afterAll(() => api.close());

const reset = (key: string, headers: Record<string, string> = {}, bearer = token) =>
  api.node.app.request(`/counters/${encodeURIComponent(key)}`, {
    method: "DELETE",
    headers: { authorization: `Bearer ${bearer}`, ...headers },
  });

async function read(key: string): Promise<{ status: number; total?: number }> {
  const response = await api.node.app.request(`/counters/${encodeURIComponent(key)}`, {
    headers: { authorization: `Bearer ${token}` },
  });
  if (response.status !== 200) return { status: response.status };
  return { status: 200, total: ((await response.json()) as { total: number }).total };
}

const increment = async (key: string, value: number) =>
  expect((await api.increment({ key, value }, token)).status).toBe(202);

describe("DELETE /counters/{key}", () => {
  it("discards what was counted before it, wherever it is, and counts what comes after from zero", async () => {
    const key = "reset-everywhere";
    const { shard } = new Keyspace(api.prefix, 4).shardOf(key);
    const keys = shardKeys(api.prefix, shard);
    // In Postgres, in a batch the syncer swapped aside and has not committed, and in the dirty hash.
    await api.node.pool.query("INSERT INTO counters (key, value, updated_at) VALUES ($1, 100, now())", [key]);
    await api.node.redis.hset(keys.flushing, key, "20");
    await api.node.redis.hset(keys.flushingMeta, { batch: "b1", seq: "1", swapped_at: "0" });
    await api.node.redis.set(keys.seq, "1");
    await increment(key, 3);
    expect(await read(key)).toEqual({ status: 200, total: 123 });

    const response = await reset(key);
    expect(response.status).toBe(202);
    expect(await response.text()).toBe("");
    expect(await read(key)).toEqual({ status: 404 });

    await increment(key, 4);
    expect(await read(key)).toEqual({ status: 200, total: 4 });
    await api.node.redis.del(keys.flushing, keys.flushingMeta);
  });

  it("leaves a reset key out of listings and reads it as zeros in POST /read until it is counted again", async () => {
    await increment("reset-listed:a", 1);
    await increment("reset-listed:b", 1);
    expect((await reset("reset-listed:a")).status).toBe(202);

    const listing = await api.node.app.request("/counters?prefix=reset-listed:", {
      headers: { authorization: `Bearer ${token}` },
    });
    const { counters } = (await listing.json()) as { counters: { key: string }[] };
    expect(counters.map((counter) => counter.key)).toEqual(["reset-listed:b"]);

    const many = await api.node.app.request("/read", {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      body: JSON.stringify({ keys: ["reset-listed:a"] }),
    });
    expect(((await many.json()) as { counters: { total: number }[] }).counters[0]?.total).toBe(0);
  });

  it("resets once per Idempotency-Key: a retry after more increments does not reset them", async () => {
    const key = "reset-once";
    await increment(key, 10);
    expect((await reset(key, { "Idempotency-Key": "reset-1" })).status).toBe(202);
    await increment(key, 2);

    const retry = await reset(key, { "Idempotency-Key": "reset-1" });
    expect(retry.status).toBe(202);
    expect(retry.headers.get("Idempotent-Replayed")).toBe("true");
    expect(await read(key)).toEqual({ status: 200, total: 2 });

    const other = await reset("reset-other-key", { "Idempotency-Key": "reset-1" });
    // Another key may live in another shard, where the record is not: a new request then.
    expect([202, 422]).toContain(other.status);
  });

  it("lets a batch in flight at the same time land wholly before or wholly after it", async () => {
    for (let round = 0; round < 20; round++) {
      const key = `reset-race-${round}`;
      const [batch, cleared] = await Promise.all([
        api.node.app.request("/increments", {
          method: "POST",
          headers: { authorization: `Bearer ${token}` },
          body: JSON.stringify({
            increments: [
              { key, value: 3 },
              { key: `${key}-other`, value: 1 },
              { key, value: 4 },
            ],
          }),
        }),
        reset(key),
      ]);
      expect([batch.status, cleared.status]).toEqual([202, 202]);
      const { total } = await read(key);
      expect([undefined, 7], `round ${round}`).toContain(total);
    }
  });

  it("needs the counters:reset scope, and a key inside the token's prefixes", async () => {
    await increment("reset-guarded", 5);
    const writer = await api.token({ scopes: ["counters:write", "counters:read"] });
    const refused = await reset("reset-guarded", {}, writer);
    expect(refused.status).toBe(403);
    expect((await readProblem(refused)).code).toBe("insufficient_scope");

    const confined = await api.token({ scopes: ["counters:reset"], prefixes: ["team-a:"] });
    const outside = await reset("reset-guarded", {}, confined);
    expect(outside.status).toBe(403);
    expect((await readProblem(outside)).code).toBe("namespace_forbidden");
    expect(await read("reset-guarded")).toEqual({ status: 200, total: 5 });
  });

  it("refuses with 503 counter_resharding while another shard holds the key's deltas, resetting nothing", async () => {
    const key = "reset-resharded";
    const keyspace = new Keyspace(api.prefix, 4);
    const home = keyspace.shardOf(key).shard;
    const other = shardKeys(api.prefix, (home + 1) % 4);
    // Counted under another SYNC_SHARDS, and not yet synced.
    await api.node.redis.hset(other.dirty, key, "9");
    await increment(key, 1);

    const response = await reset(key);
    expect(response.status).toBe(503);
    expect(response.headers.get("Retry-After")).toBe("5");
    expect((await readProblem(response)).code).toBe("counter_resharding");
    expect(await read(key)).toEqual({ status: 200, total: 10 });
    await api.node.redis.hdel(other.dirty, key);
  });

  it("answers 400 for an invalid key", async () => {
    const response = await reset("a\u0000b");
    expect(response.status).toBe(400);
    expect((await readProblem(response)).code).toBe("invalid_key");
  });
});
