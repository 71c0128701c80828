import { type Acknowledged, Acknowledgements, NO_REPLICAS } from "./acknowledgements.ts";
import type { RedisClient } from "./client.ts";
import type { IdempotencyRecord, Keyspace, ShardKeys } from "./keyspace.ts";
import { LuaScript } from "./lua-script.ts";
import { Masters } from "./masters.ts";
import {
  type GroupResult,
  groupResults,
  type Increment,
  type IncrementOnceResult,
  incrementOnceResult,
  oneOf,
  type ShardPending,
  type SwapOutcome,
  shardPending,
  swapOutcome,
  UnexpectedReplyError,
} from "./script-replies.ts";

/** tally's Lua scripts (lib/redis/scripts/), each loaded once per process. */
export const LUA = {
  incrementBatch: new LuaScript("increment-batch-1.lua"),
  incrementOnce: new LuaScript("increment-once-3.lua"),
  reset: new LuaScript("reset-2.lua"),
  resetOnce: new LuaScript("reset-once-4.lua"),
  swap: new LuaScript("swap-6.lua"),
  finish: new LuaScript("finish-3.lua"),
  pending: new LuaScript("pending-6.lua"),
  leaseClaim: new LuaScript("lease-claim-1.lua"),
  leaseRelease: new LuaScript("lease-release-1.lua"),
  syncersHeartbeat: new LuaScript("syncers-heartbeat-1.lua"),
} as const;

/**
 * A group's increments as the increment scripts take them: one argument, the JSON array ["key", "value", …]
 * (see includes/apply-increments.lua). Values go as text, which JSON carries exactly whatever their size.
 */
function packIncrements(increments: readonly Increment[]): string {
  const flat = new Array<string>(increments.length * 2);
  let at = 0;
  for (const { key, value } of increments) {
    flat[at++] = key;
    flat[at++] = String(value);
  }
  return JSON.stringify(flat);
}

/**
 * Every Redis command tally sends about the counters, and only these: the scripts (each builds its KEYS from
 * the keyspace, so no caller lists keys by position, and reads its reason codes into a discriminated union)
 * and the few plain commands the syncer reads a batch and prunes records with. The writes a failover must not
 * undo (increments, swaps) go through `acknowledgements` and say whether the replicas confirmed them; without
 * it they wait for no replica.
 */
export class Scripts {
  readonly #redis: RedisClient;
  readonly #keyspace: Keyspace;
  readonly #acknowledgements: Acknowledgements;

  constructor(redis: RedisClient, keyspace: Keyspace, acknowledgements?: Acknowledgements) {
    this.#redis = redis;
    this.#keyspace = keyspace;
    this.#acknowledgements =
      acknowledgements ??
      new Acknowledgements({ masters: new Masters(redis), policy: NO_REPLICAS, timeoutMs: 0, aof: false });
  }

  /**
   * Applies groups of increments to the shard in one round trip, each group whole or not at all; confirmed
   * once the shard's replicas hold them.
   */
  async incrementGroups(
    shard: ShardKeys,
    groups: readonly (readonly Increment[])[],
  ): Promise<Acknowledged<GroupResult[]>> {
    const args = groups.map(packIncrements);
    const { value, confirmed } = await this.#acknowledgements.write(shard.dirty, (master) =>
      LUA.incrementBatch.run(master, [shard.dirty], args),
    );
    return { value: groupResults(value, groups.length), confirmed };
  }

  /**
   * Applies increments, whole or not at all, at most once per Idempotency-Key record; confirmed once the
   * shard's replicas hold them (for a replay: hold the first request's).
   */
  async incrementOnce(
    record: IdempotencyRecord,
    increments: readonly Increment[],
    fingerprint: string,
    limits: { ttlSeconds: number; maxRecordsInShard: number },
  ): Promise<Acknowledged<IncrementOnceResult>> {
    const { shard } = record;
    const { value, confirmed } = await this.#acknowledgements.write(shard.dirty, (master) =>
      LUA.incrementOnce.run(
        master,
        [shard.dirty, record.key, shard.idempotencyIndex],
        [
          fingerprint,
          limits.ttlSeconds,
          Date.now(),
          limits.maxRecordsInShard,
          record.digest,
          packIncrements(increments),
        ],
      ),
    );
    return { value: incrementOnceResult(value), confirmed };
  }

  /**
   * Resets a counter in its shard, at most once per Idempotency-Key record when one is given; confirmed once
   * the shard's replicas hold the reset (for a replay: the first request's).
   */
  async reset(
    counterKey: string,
    once?: {
      record: IdempotencyRecord;
      fingerprint: string;
      limits: { ttlSeconds: number; maxRecordsInShard: number };
    },
  ): Promise<Acknowledged<IncrementOnceResult>> {
    const shard = this.#keyspace.shardOf(counterKey);
    const { value, confirmed } = await this.#acknowledgements.write(shard.dirty, (master) =>
      once === undefined
        ? LUA.reset.run(master, [shard.dirty, shard.resets], [counterKey])
        : LUA.resetOnce.run(
            master,
            [shard.dirty, shard.resets, once.record.key, shard.idempotencyIndex],
            [
              once.fingerprint,
              once.limits.ttlSeconds,
              Date.now(),
              once.limits.maxRecordsInShard,
              once.record.digest,
              counterKey,
            ],
          ),
    );
    return { value: incrementOnceResult(value), confirmed };
  }

  /** What the shard holds for the counter keys (at least one) that Postgres may not have yet, read atomically. */
  async pending(shard: ShardKeys, counterKeys: readonly string[]): Promise<ShardPending> {
    const keys = [
      shard.dirty,
      shard.flushing,
      shard.flushingMeta,
      shard.seq,
      shard.resets,
      shard.flushingResets,
    ];
    return shardPending(await LUA.pending.run(this.#redis, keys, counterKeys), counterKeys.length);
  }

  /**
   * Starts a batch for the shard, or returns the unfinished one. Confirmed once the shard's replicas hold
   * the swap: only then may the batch be applied.
   */
  async swap(
    shard: ShardKeys,
    batchId: string,
    swappedAt: Date,
    minSeq: bigint,
  ): Promise<Acknowledged<SwapOutcome>> {
    const keys = [
      shard.dirty,
      shard.flushing,
      shard.flushingMeta,
      shard.seq,
      shard.resets,
      shard.flushingResets,
    ];
    const { value, confirmed } = await this.#acknowledgements.write(shard.dirty, (master) =>
      LUA.swap.run(master, keys, [batchId, swappedAt.getTime(), Number(minSeq)]),
    );
    return { value: swapOutcome(value), confirmed };
  }

  /** One page of the shard's flushing hash (HSCAN: a field may come twice, never HGETALL). */
  async scanFlushing(
    shard: ShardKeys,
    cursor: string,
    count: number,
  ): Promise<{ cursor: string; fields: string[] }> {
    const [next, fields] = await this.#redis.hscan(shard.flushing, cursor, "COUNT", count);
    return { cursor: next, fields };
  }

  /**
   * The counter keys starting with `prefix` in the shard's dirty and flushing hashes, a page at a time: what a
   * listing adds to the keys Postgres holds. HSCAN, so a key may come more than once.
   */
  async *pendingKeys(shard: ShardKeys, prefix: string): AsyncGenerator<string[]> {
    const pattern = `${escapeGlob(prefix)}*`;
    for (const hash of [shard.dirty, shard.flushing]) {
      let cursor = "0";
      do {
        const [next, entries] = await this.#redis.hscan(
          hash,
          cursor,
          "MATCH",
          pattern,
          "COUNT",
          KEY_SCAN_COUNT,
        );
        // Field, value, field, value: the fields are the counter keys.
        yield entries.filter((_, index) => index % 2 === 0);
        cursor = next;
      } while (cursor !== "0");
    }
  }

  /** Every key of the shard's flushing resets set (SSCAN: a key may come twice, never SMEMBERS). */
  async flushingResets(shard: ShardKeys, count: number): Promise<string[]> {
    const keys: string[] = [];
    let cursor = "0";
    do {
      const [next, members] = await this.#redis.sscan(shard.flushingResets, cursor, "COUNT", count);
      keys.push(...members);
      cursor = next;
    } while (cursor !== "0");
    return [...new Set(keys)];
  }

  /**
   * The batch the flushing meta names (null when none), the flushing hash's field count and the flushing
   * resets set's size, in one go.
   */
  async flushingState(shard: ShardKeys): Promise<{ batchId: string | null; fields: number; resets: number }> {
    const [batchId, fields, resets] = await Promise.all([
      this.#redis.hget(shard.flushingMeta, "batch"),
      this.#redis.hlen(shard.flushing),
      this.#redis.scard(shard.flushingResets),
    ]);
    return { batchId, fields, resets };
  }

  /** Deletes the shard's flushing batch while it still is `batchId`; false when it is another or none. */
  async finish(shard: ShardKeys, batchId: string): Promise<boolean> {
    const keys = [shard.flushing, shard.flushingMeta, shard.flushingResets];
    const reply = await LUA.finish.run(this.#redis, keys, [batchId]);
    return oneOf("finish", reply, ["finished", "other"]) === "finished";
  }

  /** Drops the shard's expired idempotency index entries; resolves to how many records it still holds. */
  async pruneIdempotencyIndex(shard: ShardKeys, nowMs: number): Promise<number> {
    await this.#redis.zremrangebyscore(shard.idempotencyIndex, "-inf", nowMs);
    return this.#redis.zcard(shard.idempotencyIndex);
  }

  /** Takes or extends a shard's syncer lease; true when `holder` holds it afterwards. */
  async claimLease(shard: ShardKeys, holder: string, ttlMs: number): Promise<boolean> {
    const reply = await LUA.leaseClaim.run(this.#redis, [shard.lease], [holder, ttlMs]);
    return oneOf("lease-claim", reply, ["held", "taken"]) === "held";
  }

  /** Gives a shard's lease up if `holder` holds it. */
  async releaseLease(shard: ShardKeys, holder: string): Promise<void> {
    const reply = await LUA.leaseRelease.run(this.#redis, [shard.lease], [holder]);
    oneOf("lease-release", reply, ["released", "not-held"]);
  }

  /** Says `holder` is alive for `aliveMs`; resolves to the number of syncers alive. */
  async syncersHeartbeat(holder: string, aliveMs: number): Promise<number> {
    const reply = await LUA.syncersHeartbeat.run(this.#redis, [this.#keyspace.syncers], [holder, aliveMs]);
    if (typeof reply !== "number") throw new UnexpectedReplyError("syncers-heartbeat", reply);
    return reply;
  }

  /** Takes `holder` out of the living at once, so the others take its shards without waiting. */
  async syncerLeaves(holder: string): Promise<void> {
    await this.#redis.zrem(this.#keyspace.syncers, holder);
  }
}

/** HSCAN's work per call while listing keys: large enough for few round trips, small enough not to stall Redis. */
const KEY_SCAN_COUNT = 1_000;

/** `text` matched literally by a Redis glob pattern: its pattern characters escaped. */
function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, "\\$&");
}
