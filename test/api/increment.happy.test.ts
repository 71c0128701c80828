import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { shardKeys, shardOfKey } from "../../lib/redis/keyspace.ts";
import { createTestApi, type TestApi } from "../support/api.ts";

let api: TestApi;
let token: string;
beforeAll(async () => {
  api = await createTestApi();
  token = await api.token();
});
afterAll(() => api.close());

const dirty = () => shardKeys(api.prefix, 0).dirty;

describe("POST /increment: accepted", () => {
  it("answers 202 with an empty body once Redis holds the increment", async () => {
    const response = await api.increment({ key: "page:home", value: 5 }, token);
    expect(response.status).toBe(202);
    expect(await response.text()).toBe("");
    expect(await api.node.redis.hget(dirty(), "page:home")).toBe("5");
  });

  it("adds up repeated increments and applies negative values as decrements", async () => {
    for (const value of [10, 20, -7])
      expect((await api.increment({ key: "sum", value }, token)).status).toBe(202);
    expect(await api.node.redis.hget(dirty(), "sum")).toBe("23");
  });

  it("accepts the extreme safe integers exactly", async () => {
    const max = Number.MAX_SAFE_INTEGER;
    expect((await api.increment({ key: "big", value: max }, token)).status).toBe(202);
    expect((await api.increment({ key: "big", value: max }, token)).status).toBe(202);
    expect(await api.node.redis.hget(dirty(), "big")).toBe((2n * BigInt(max)).toString());
    expect((await api.increment({ key: "small", value: -max }, token)).status).toBe(202);
    expect(await api.node.redis.hget(dirty(), "small")).toBe(String(-max));
  });

  it("accepts 0 without changing the total", async () => {
    expect((await api.increment({ key: "zero", value: 3 }, token)).status).toBe(202);
    expect((await api.increment({ key: "zero", value: 0 }, token)).status).toBe(202);
    expect(await api.node.redis.hget(dirty(), "zero")).toBe("3");
  });

  it("stores keys byte-exact: Unicode, emoji, spaces and slashes", async () => {
    const keys = ["ключ", "🦄 unicorn/ride", "a b\tc", "x".repeat(256), "😀".repeat(256), "e\u0301"];
    for (const key of keys) expect((await api.increment({ key, value: 1 }, token)).status).toBe(202);
    const stored = await api.node.redis.hgetall(dirty());
    for (const key of keys) expect(stored[key]).toBe("1");
  });

  it("takes JSON whatever the Content-Type says, and integral floats like 2.0 or 1e3", async () => {
    const response = await api.node.app.request("/increment", {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "text/plain" },
      body: '{"key":"loose","value":1e3}',
    });
    expect(response.status).toBe(202);
    expect((await api.increment('{"key":"loose","value":2.0}', token)).status).toBe(202);
    expect(await api.node.redis.hget(dirty(), "loose")).toBe("1002");
  });

  it("echoes a well-formed X-Request-Id and makes one up otherwise", async () => {
    const echoed = await api.increment({ key: "rid", value: 1 }, token, { "x-request-id": "abc-123" });
    expect(echoed.headers.get("x-request-id")).toBe("abc-123");
    const made = await api.increment({ key: "rid", value: 1 }, token, { "x-request-id": "bad id\u0001" });
    expect(made.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("keeps each key in its own shard, spreads keys over every shard and never loses an increment", async () => {
    const sharded = await createTestApi({ SYNC_SHARDS: "4" });
    try {
      const shardToken = await sharded.token();
      const keys = Array.from({ length: 40 }, (_, i) => `spread:${i}`);
      // Waves of concurrent requests share event-loop turns, so each turn's script call carries several keys.
      const statuses: number[] = [];
      for (let wave = 0; wave < 20; wave++) {
        const responses = await Promise.all([
          ...Array.from({ length: 5 }, () => sharded.increment({ key: "hot", value: 1 }, shardToken)),
          ...keys.map((key) => sharded.increment({ key, value: 2 }, shardToken)),
        ]);
        statuses.push(...responses.map((response) => response.status));
      }
      expect(statuses.filter((status) => status !== 202)).toEqual([]);

      const dirtyHashes = await Promise.all(
        [0, 1, 2, 3].map((shard) => sharded.node.redis.hgetall(shardKeys(sharded.prefix, shard).dirty)),
      );
      const holders = (key: string) => dirtyHashes.flatMap((hash, shard) => (key in hash ? [shard] : []));
      expect(holders("hot")).toEqual([shardOfKey("hot", 4)]);
      expect(dirtyHashes[shardOfKey("hot", 4)]?.hot).toBe("100");
      for (const key of keys) {
        expect(holders(key)).toEqual([shardOfKey(key, 4)]);
        expect(dirtyHashes[shardOfKey(key, 4)]?.[key]).toBe("40");
      }
      expect(dirtyHashes.every((hash) => Object.keys(hash).length > 0)).toBe(true);
    } finally {
      await sharded.close();
    }
  });
});
