import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { shardKeys } from "../../lib/redis/keyspace.ts";
import { createTestApi, readProblem, type TestApi } from "../support/api.ts";

let api: TestApi;
let token: string;
beforeAll(async () => {
  api = await createTestApi();
  token = await api.token();
});
afterAll(() => api.close());

const read = (key: string) =>
  api.node.app.request(`/counters/${encodeURIComponent(key)}`, {
    headers: { authorization: `Bearer ${token}` },
  });

describe("GET /counters/{key}", () => {
  it.each([
    ["too long", "k".repeat(257), "key must be at most 256 characters"],
    ["with NUL", "a\u0000b", "key must not contain the NUL character"],
  ])("answers 400 invalid_key for a key %s, saying why", async (_name, key, detail) => {
    // (A lone surrogate cannot arrive in a path: percent-decoding yields UTF-8 only.)
    const response = await api.node.app.request(`/counters/${encodeURIComponent(key)}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(response.status).toBe(400);
    const problem = await readProblem(response);
    expect(problem).toMatchObject({ code: "invalid_key", detail, errors: [{ pointer: "", detail }] });
  });

  it("reports a key only Redis knows as all pending, with no persisted time yet", async () => {
    await api.increment({ key: "fresh", value: 7 }, token);
    const response = await read("fresh");
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      key: "fresh",
      persisted: 0,
      pending: 7,
      total: 7,
      persistedAsOf: null,
    });
  });

  it("adds persisted, dirty and not-yet-committed flushing deltas", async () => {
    const keys = shardKeys(api.prefix, 0);
    await api.node.pool.query("INSERT INTO counters (key, value, updated_at) VALUES ('mixed', 100, now())");
    await api.node.pool.query(
      "INSERT INTO sync_state (shard, synced_through, last_seq) VALUES (0, '2026-01-01T00:00:00Z', 4)",
    );
    // Batch 5 is swapped (flushing) but not committed: its delta is pending.
    await api.node.redis.hset(keys.flushing, "mixed", "20");
    await api.node.redis.hset(keys.flushingMeta, { batch: "b5", seq: "5", swapped_at: "0" });
    await api.node.redis.set(keys.seq, "5");
    await api.node.redis.hset(keys.dirty, "mixed", "3");
    expect(await (await read("mixed")).json()).toEqual({
      key: "mixed",
      persisted: 100,
      pending: 23,
      total: 123,
      persistedAsOf: "2026-01-01T00:00:00.000Z",
    });

    // Batch 5 committed (Postgres holds its 20) but its flushing hash is not deleted yet: not pending twice.
    await api.node.pool.query("UPDATE counters SET value = 120 WHERE key = 'mixed'");
    await api.node.pool.query("UPDATE sync_state SET last_seq = 5");
    expect(await (await read("mixed")).json()).toMatchObject({ persisted: 120, pending: 3, total: 123 });
    await api.node.redis.del(keys.flushing, keys.flushingMeta);
  });

  it("keeps 64-bit totals exact in the JSON", async () => {
    await api.node.pool.query(
      "INSERT INTO counters (key, value, updated_at) VALUES ('huge', 9223372036854775000, now())",
    );
    const text = await (await read("huge")).text();
    expect(text).toContain('"persisted":9223372036854775000');
  });

  it("reads keys with slashes and Unicode", async () => {
    await api.increment({ key: "a/b/ключ 🦄", value: 2 }, token);
    expect(await (await read("a/b/ключ 🦄")).json()).toMatchObject({ key: "a/b/ключ 🦄", total: 2 });
  });

  it("answers 404 for a key nobody counted and 400 for an invalid key", async () => {
    const missing = await read("never-seen");
    expect(missing.status).toBe(404);
    expect((await readProblem(missing)).code).toBe("counter_not_found");
    expect((await read("k".repeat(300))).status).toBe(400);
  });

  it("requires a token", async () => {
    expect((await api.node.app.request("/counters/x")).status).toBe(401);
  });
});
