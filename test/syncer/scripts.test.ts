import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RedisClient } from "../../lib/redis/client.ts";
import { Keyspace, type ShardKeys, shardKeys } from "../../lib/redis/keyspace.ts";
import { LUA, Scripts } from "../../lib/redis/scripts.ts";
import { randomPrefix, sharedRedisUrl } from "../harness/fixtures.ts";
import { deletePrefix, openRedis } from "../support/syncer.ts";

// The Lua scripts are the Redis half of the exactly-once protocol; they are called here directly, with the
// arguments flush-shard.ts passes, so each guarantee is pinned down without a syncer around it.

let redis: RedisClient;
const prefixes: string[] = [];

beforeAll(async () => {
  redis = await openRedis(sharedRedisUrl(), "test-scripts");
});

afterAll(async () => {
  for (const prefix of prefixes) await deletePrefix(redis, prefix);
  redis.disconnect();
});

/** Keys of shard 0 under a prefix of its own, so every test starts with an empty shard. */
function freshShard(): ShardKeys {
  const prefix = randomPrefix();
  prefixes.push(prefix);
  return shardKeys(prefix, 0);
}

// Raw replies, as the scripts give them: Scripts reads them into discriminated unions.
async function swap(keys: ShardKeys, batchId: string, swappedAtMs: number, minSeq = 1): Promise<unknown[]> {
  const reply = await LUA.swap.run(
    redis,
    [keys.dirty, keys.flushing, keys.flushingMeta, keys.seq, keys.resets, keys.flushingResets],
    [batchId, swappedAtMs, minSeq],
  );
  if (!Array.isArray(reply)) throw new Error(`swap answered ${JSON.stringify(reply)}`);
  return reply;
}

function finish(keys: ShardKeys, batchId: string): Promise<unknown> {
  return LUA.finish.run(redis, [keys.flushing, keys.flushingMeta, keys.flushingResets], [batchId]);
}

describe("swap-6.lua", () => {
  it("moves the dirty hash to the flushing hash under a new batch, with seq and swap time", async () => {
    const keys = freshShard();
    await redis.hincrby(keys.dirty, "a", 5);
    await redis.hincrby(keys.dirty, "b", -3);
    const batchId = randomUUID();

    const result = await swap(keys, batchId, 1_700_000_000_123);

    expect(result).toEqual(["new", batchId, "1", "1700000000123", 0]);
    expect(await redis.exists(keys.dirty)).toBe(0);
    expect(await redis.hgetall(keys.flushing)).toEqual({ a: "5", b: "-3" });
    expect(await redis.hgetall(keys.flushingMeta)).toEqual({
      batch: batchId,
      seq: "1",
      swapped_at: "1700000000123",
    });
    expect(await redis.get(keys.seq)).toBe("1");
  });

  it("returns the unfinished batch (resumed) and never overwrites it or touches the dirty hash", async () => {
    const keys = freshShard();
    await redis.hincrby(keys.dirty, "a", 5);
    const first = randomUUID();
    await swap(keys, first, 1_000);
    // Increments accepted after the swap, while the batch is still being flushed.
    await redis.hincrby(keys.dirty, "a", 7);
    await redis.hincrby(keys.dirty, "c", 1);

    const result = await swap(keys, randomUUID(), 2_000);

    expect(result).toEqual(["resumed", first, "1", "1000"]);
    expect(await redis.hgetall(keys.flushing)).toEqual({ a: "5" });
    expect(await redis.hgetall(keys.dirty)).toEqual({ a: "7", c: "1" });
    // Resuming writes (a count of resumes), so that a WAIT after it covers the swap that made the batch.
    expect(await redis.hgetall(keys.flushingMeta)).toEqual({
      batch: first,
      seq: "1",
      swapped_at: "1000",
      resumes: "1",
    });
    // A resume hands out no new seq: the batch keeps its place in the shard's order.
    expect(await redis.get(keys.seq)).toBe("1");
  });

  it("answers empty and changes nothing when the shard has nothing to flush", async () => {
    const keys = freshShard();

    expect(await swap(keys, randomUUID(), 1_000)).toEqual(["empty"]);

    expect(await redis.exists(keys.dirty, keys.flushing, keys.flushingMeta, keys.seq)).toBe(0);
  });

  it("restarts a missing counter from the floor (Redis lost its data) and says so", async () => {
    const keys = freshShard();
    await redis.hincrby(keys.dirty, "a", 1);
    const raised = await swap(keys, randomUUID(), 1_000, 42);
    expect(raised.slice(2)).toEqual(["42", "1000", 1]);
    expect(await redis.get(keys.seq)).toBe("42");
    await redis.del(keys.flushing, keys.flushingMeta);

    await redis.hincrby(keys.dirty, "a", 1);
    const next = await swap(keys, randomUUID(), 2_000, 5);

    // A floor below the counter is ignored.
    expect(next.slice(2)).toEqual(["43", "2000", 0]);
  });

  it("answers behind, touching nothing, when the counter is below the floor: Redis went back in time", async () => {
    const keys = freshShard();
    await redis.set(keys.seq, "6");
    await redis.hincrby(keys.dirty, "a", 1);

    // Postgres has committed batch 9: a counter at 6 means this Redis lost batches 7 to 9's swaps.
    expect(await swap(keys, randomUUID(), 1_000, 10)).toEqual(["behind", "6"]);

    expect(await redis.get(keys.seq)).toBe("6");
    expect(await redis.hgetall(keys.dirty)).toEqual({ a: "1" });
    expect(await redis.exists(keys.flushing, keys.flushingMeta)).toBe(0);
    // The next seq being the floor is the normal case.
    expect((await swap(keys, randomUUID(), 2_000, 7))[0]).toBe("new");
  });

  it("adopts a flushing hash that has lost its meta instead of stranding its deltas", async () => {
    const keys = freshShard();
    await redis.hset(keys.flushing, "orphan", "9");
    await redis.hincrby(keys.dirty, "new", 1);
    const batchId = randomUUID();

    const result = await swap(keys, batchId, 3_000);

    expect(result).toEqual(["resumed", batchId, "1", "3000"]);
    expect(await redis.hgetall(keys.flushingMeta)).toEqual({ batch: batchId, seq: "1", swapped_at: "3000" });
    expect(await redis.hgetall(keys.flushing)).toEqual({ orphan: "9" });
    expect(await redis.hgetall(keys.dirty)).toEqual({ new: "1" });
  });
});

describe("swap-6.lua with resets", () => {
  it("moves the resets set aside with the dirty hash, into the same batch", async () => {
    const keys = freshShard();
    await redis.sadd(keys.resets, "r");
    await redis.hincrby(keys.dirty, "r", 2);
    const batchId = randomUUID();

    expect((await swap(keys, batchId, 1_000))[0]).toBe("new");

    expect(await redis.smembers(keys.flushingResets)).toEqual(["r"]);
    expect(await redis.hgetall(keys.flushing)).toEqual({ r: "2" });
    expect(await redis.exists(keys.resets, keys.dirty)).toBe(0);
  });

  it("makes a batch of resets alone, and resumes a batch that holds only resets", async () => {
    const keys = freshShard();
    await redis.sadd(keys.resets, "r");
    const batchId = randomUUID();
    expect(await swap(keys, batchId, 1_000)).toEqual(["new", batchId, "1", "1000", 0]);
    expect(await redis.exists(keys.flushing)).toBe(0);

    await redis.hincrby(keys.dirty, "r", 1);
    expect((await swap(keys, randomUUID(), 2_000)).slice(0, 2)).toEqual(["resumed", batchId]);
    expect(await redis.hgetall(keys.dirty)).toEqual({ r: "1" });
  });
});

describe("reset-2.lua and reset-once-4.lua", () => {
  const scripts = () => new Scripts(redis, new Keyspace("unused", 1));

  it("drops the key's dirty delta and records the reset for the next batch, leaving other keys alone", async () => {
    const keys = freshShard();
    await redis.hset(keys.dirty, { a: "5", b: "1" });
    expect(await LUA.reset.run(redis, [keys.dirty, keys.resets], ["a"])).toEqual(["applied"]);
    expect(await redis.hgetall(keys.dirty)).toEqual({ b: "1" });
    expect(await redis.smembers(keys.resets)).toEqual(["a"]);
    // Pending readers see the reset in the dirty generation.
    const pending = await scripts().pending(keys, ["a", "b"]);
    expect(pending.dirtyReset).toEqual([true, false]);
  });

  it("resets once per record: a replay does nothing, another request with the record is refused", async () => {
    const keys = freshShard();
    const record = `${keys.dirty}:test-record`;
    const resetOnce = (fingerprint: string, key: string) =>
      LUA.resetOnce.run(
        redis,
        [keys.dirty, keys.resets, record, keys.idempotencyIndex],
        [fingerprint, 60, Date.now(), 10, "digest", key],
      );
    await redis.hset(keys.dirty, "a", "5");
    expect(await resetOnce("f1", "a")).toEqual(["applied"]);
    await redis.hset(keys.dirty, "a", "3");
    expect(await resetOnce("f1", "a")).toEqual(["replayed"]);
    expect(await resetOnce("f2", "b")).toEqual(["reused"]);
    expect(await redis.hgetall(keys.dirty)).toEqual({ a: "3" });
    expect(await redis.smembers(keys.resets)).toEqual(["a"]);
  });
});

describe("finish-3.lua", () => {
  it("deletes the flushing hash, its resets and its meta when the batch id matches", async () => {
    const keys = freshShard();
    await redis.hincrby(keys.dirty, "a", 1);
    await redis.sadd(keys.resets, "b");
    const batchId = randomUUID();
    await swap(keys, batchId, 1_000);

    expect(await finish(keys, batchId)).toBe("finished");

    expect(await redis.exists(keys.flushing, keys.flushingMeta, keys.flushingResets)).toBe(0);
    // The seq counter outlives batches: it orders them across the shard's whole life.
    expect(await redis.get(keys.seq)).toBe("1");
  });

  it("leaves a newer batch in place when called with a stale batch id", async () => {
    const keys = freshShard();
    await redis.hincrby(keys.dirty, "a", 1);
    const stale = randomUUID();
    await swap(keys, stale, 1_000);
    await finish(keys, stale);
    await redis.hincrby(keys.dirty, "b", 2);
    const newer = randomUUID();
    await swap(keys, newer, 2_000);

    // A slow syncer finishing the batch that another syncer already finished.
    expect(await finish(keys, stale)).toBe("other");

    expect(await redis.hgetall(keys.flushing)).toEqual({ b: "2" });
    expect(await redis.hget(keys.flushingMeta, "batch")).toBe(newer);
  });

  it("does nothing when there is no flushing hash", async () => {
    const keys = freshShard();
    await redis.hincrby(keys.dirty, "a", 1);

    expect(await finish(keys, randomUUID())).toBe("other");

    expect(await redis.hgetall(keys.dirty)).toEqual({ a: "1" });
  });
});

describe("pending-6.lua", () => {
  // pending() takes the shard's keys; the keyspace is for the scripts that find a key's shard themselves.
  const pending = (keys: ShardKeys, counterKeys: string[]) =>
    new Scripts(redis, new Keyspace("unused", 1)).pending(keys, counterKeys);

  it("answers nulls for a shard that never had a write", async () => {
    expect(await pending(freshShard(), ["a", "b"])).toEqual({
      flushingSeq: null,
      lastSeq: null,
      dirty: [null, null],
      flushing: [null, null],
      dirtyReset: [false, false],
      flushingReset: [false, false],
    });
  });

  it("answers each key's dirty and flushing deltas, in the order asked, with the batch's seq and the last one", async () => {
    const keys = freshShard();
    await redis.hincrby(keys.dirty, "a", 10);
    await swap(keys, randomUUID(), 1_000, 7);
    await redis.hincrby(keys.dirty, "a", -4);
    await redis.hincrby(keys.dirty, "b", 2);

    expect(await pending(keys, ["unknown", "b", "a", "b"])).toEqual({
      flushingSeq: "7",
      lastSeq: "7",
      dirty: [null, "2", "-4", "2"],
      flushing: [null, null, "10", null],
      dirtyReset: [false, false, false, false],
      flushingReset: [false, false, false, false],
    });
  });

  it("answers only the seq counter once the batch is finished", async () => {
    const keys = freshShard();
    await redis.hincrby(keys.dirty, "a", 10);
    const batchId = randomUUID();
    await swap(keys, batchId, 1_000);
    await finish(keys, batchId);

    expect(await pending(keys, ["a"])).toMatchObject({ flushingSeq: null, lastSeq: "1", dirty: [null] });
  });
});

/** A group's increments as the increment scripts take them: a JSON array of key and value texts. */
const packed = (...pairs: string[]) => JSON.stringify(pairs);

describe("increment-batch-1.lua and increment-once-3.lua (the shared apply-increments include)", () => {
  it("take a group's increments packed in one argument, keys of any character JSON escapes and values beyond 2^53 included", async () => {
    const keys = freshShard();
    const key = 'q"u\\o{t,e} ключ 🔑 \n\t';
    expect(
      await LUA.incrementBatch.run(
        redis,
        [keys.dirty],
        [packed(key, "5", "b", "-2"), packed("b", "9007199254740993", "\u2028\u0001", "1")],
      ),
    ).toEqual(["applied", "applied"]);
    expect(await redis.hgetall(keys.dirty)).toEqual({
      [key]: "5",
      b: "9007199254740991",
      "\u2028\u0001": "1",
    });
  });

  it("applies each group whole or not at all, answering a reason code for a refused one", async () => {
    const keys = freshShard();
    await redis.hset(keys.dirty, "edge", (2n ** 63n - 1n).toString());

    const reply = await LUA.incrementBatch.run(
      redis,
      [keys.dirty],
      [packed("a", "1", "b", "2"), packed("edge", "1")],
    );

    expect(reply).toEqual(["applied", ["refused", 1, "overflow"]]);
    expect(await redis.hgetall(keys.dirty)).toEqual({ a: "1", b: "2", edge: (2n ** 63n - 1n).toString() });
  });

  it("undoes what a refused part applied before the refusal, and drops a field it created", async () => {
    const keys = freshShard();
    await redis.hset(keys.dirty, "edge", (2n ** 63n - 1n).toString(), "kept", "5");
    const record = `${keys.dirty}:record`;
    const index = `${keys.dirty}:index`;

    const reply = await LUA.incrementOnce.run(
      redis,
      [keys.dirty, record, index],
      ["fingerprint", 60, Date.now(), 100, "digest", packed("new", "3", "kept", "-5", "edge", "1")],
    );

    expect(reply).toEqual(["refused", 3, "overflow"]);
    expect(await redis.hgetall(keys.dirty)).toEqual({ edge: (2n ** 63n - 1n).toString(), kept: "5" });
    expect(await redis.exists(record, index)).toBe(0);
  });

  it("answers applied, then replayed for the same body and reused for another", async () => {
    const keys = freshShard();
    const run = (fingerprint: string) =>
      LUA.incrementOnce.run(
        redis,
        [keys.dirty, `${keys.dirty}:record`, `${keys.dirty}:index`],
        [fingerprint, 60, Date.now(), 100, "digest", packed("k", "1")],
      );

    expect(await run("same")).toEqual(["applied"]);
    expect(await run("same")).toEqual(["replayed"]);
    expect(await run("other")).toEqual(["reused"]);
    expect(await redis.hget(keys.dirty, "k")).toBe("1");
  });
});

describe("LuaScript", () => {
  it("takes its key count from its file's name and refuses another", async () => {
    expect(LUA.incrementOnce.keyCount).toBe(3);
    await expect(LUA.incrementOnce.run(redis, ["only-one"], [])).rejects.toThrow(
      "increment-once takes 3 keys, not 1",
    );
  });

  it("inlines its includes, and runs on a Redis that does not know it yet (EVAL after NOSCRIPT)", async () => {
    expect(LUA.incrementBatch.source).toContain("local function applyIncrements");
    expect(LUA.incrementBatch.source).not.toContain("@include");
    await redis.script("FLUSH");
    const keys = freshShard();
    expect(await LUA.incrementBatch.run(redis, [keys.dirty], [packed("a", "1")])).toEqual(["applied"]);
  });
});
