import type { RedisClient } from "./client.ts";
import type { IdempotencyRecord, Keyspace, ShardKeys } from "./keyspace.ts";

/** What swap.lua hands out: the batch to apply, new or left over. */
export interface SwappedBatch {
  batchId: string;
  seq: bigint;
  swappedAt: Date;
  /** True for a batch a crashed or slower syncer left unfinished. */
  resumed: boolean;
}

/** What pending.lua reads of one shard for one counter key; each null when absent. */
export interface ShardPending {
  dirty: string | null;
  flushing: string | null;
  flushingSeq: string | null;
  lastSeq: string | null;
}

/** "applied" now, "replayed" (this key applied this body before), "reused" (with another body), or "full". */
export type IncrementOnceResult = "applied" | "replayed" | "reused" | "full";

const INCREMENT_ONCE_RESULTS = { 1: "applied", 0: "replayed", [-1]: "reused", [-2]: "full" } as const;

/**
 * Typed calls of tally's Lua scripts (lib/redis/scripts/*.lua, registered by createRedis): each builds its
 * script's KEYS from the keyspace, so no caller lists keys by position, and each turns the script's reply
 * into a value its caller can use.
 */
export class Scripts {
  readonly #redis: RedisClient;
  readonly #keyspace: Keyspace;

  constructor(redis: RedisClient, keyspace: Keyspace) {
    this.#redis = redis;
    this.#keyspace = keyspace;
  }

  /** Starts a batch for the shard (or returns the unfinished one); null when it has nothing to flush. */
  async swap(
    shard: ShardKeys,
    batchId: string,
    swappedAt: Date,
    minSeq: bigint,
  ): Promise<SwappedBatch | null> {
    const reply = await this.#redis.tallySwap(
      shard.dirty,
      shard.flushing,
      shard.flushingMeta,
      shard.seq,
      batchId,
      swappedAt.getTime(),
      Number(minSeq),
    );
    if (reply === null) return null;
    const [id, seq, swappedAtMs, resumed] = reply;
    return {
      batchId: id,
      seq: BigInt(seq),
      swappedAt: new Date(Number(swappedAtMs)),
      resumed: resumed === 1,
    };
  }

  /** Deletes the shard's flushing hash while it still holds `batchId`; false when it holds another or none. */
  async finish(shard: ShardKeys, batchId: string): Promise<boolean> {
    return (await this.#redis.tallyFinish(shard.flushing, shard.flushingMeta, batchId)) === 1;
  }

  /** What the shard holds for `counterKey` that Postgres may not have yet, read atomically. */
  async pending(shard: ShardKeys, counterKey: string): Promise<ShardPending> {
    const [dirty, flushing, flushingSeq, lastSeq] = await this.#redis.tallyPending(
      shard.dirty,
      shard.flushing,
      shard.flushingMeta,
      shard.seq,
      counterKey,
    );
    return { dirty, flushing, flushingSeq, lastSeq };
  }

  /** Applies each (counter key, value) on its own; per pair, 1 or the error text HINCRBY answered. */
  incrementBatch(shard: ShardKeys, pairs: (string | number)[]): Promise<(1 | string)[]> {
    return this.#redis.tallyIncrementBatch(shard.dirty, ...pairs);
  }

  /** Applies an increment at most once per Idempotency-Key record. */
  async incrementOnce(
    record: IdempotencyRecord,
    increment: { key: string; value: number; fingerprint: string },
    limits: { ttlSeconds: number; maxRecordsInShard: number },
  ): Promise<IncrementOnceResult> {
    const reply = await this.#redis.tallyIncrementOnce(
      record.shard.dirty,
      record.key,
      record.shard.idempotencyIndex,
      increment.key,
      increment.value,
      increment.fingerprint,
      limits.ttlSeconds,
      Date.now(),
      limits.maxRecordsInShard,
      record.digest,
    );
    return INCREMENT_ONCE_RESULTS[reply];
  }

  /** Takes or extends the syncer lease; true when `holder` holds it afterwards. */
  async claimLease(holder: string, ttlMs: number): Promise<boolean> {
    return (await this.#redis.tallyLeaseClaim(this.#keyspace.lease, holder, ttlMs)) === 1;
  }

  /** Gives the lease up if `holder` holds it. */
  async releaseLease(holder: string): Promise<void> {
    await this.#redis.tallyLeaseRelease(this.#keyspace.lease, holder);
  }
}
