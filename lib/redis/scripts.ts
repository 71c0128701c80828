import { type Acknowledged, Acknowledgements, NO_REPLICAS } from "./acknowledgements.ts";
import type { RedisClient } from "./client.ts";
import type { IdempotencyRecord, Keyspace, ShardKeys } from "./keyspace.ts";
import { Masters } from "./masters.ts";

/** What swap.lua hands out: the batch to apply, new or left over. */
export interface SwappedBatch {
  batchId: string;
  seq: bigint;
  swappedAt: Date;
  /** True for a batch a crashed or slower syncer left unfinished. */
  resumed: boolean;
  /** True when the shard's sequence counter was missing (Redis lost its data) and restarted from Postgres'. */
  renumbered: boolean;
}

/**
 * What swap.lua found: a batch to apply, nothing to flush, or a shard whose sequence counter is below what
 * Postgres committed, which only a Redis that went back in time shows (nothing was done).
 */
export type SwapOutcome =
  | { kind: "batch"; batch: SwappedBatch }
  | { kind: "empty" }
  | { kind: "behind"; seq: bigint };

/** What pending.lua reads of one shard for one counter key; each null when absent. */
export interface ShardPending {
  dirty: string | null;
  flushing: string | null;
  flushingSeq: string | null;
  lastSeq: string | null;
}

export interface Increment {
  key: string;
  value: number;
}

/** HINCRBY refused the increment at `index` of its group (the pending total would leave 64 bits). */
export interface Refused {
  refused: number;
  error: string;
}

/** A group of increments: applied whole, or refused whole because of one of them. */
export type GroupResult = "applied" | Refused;

/**
 * "applied" now, "replayed" (this key applied this body before), "reused" (with another body), "full" (no
 * room for another record), or refused because of one increment; nothing is applied unless "applied".
 */
export type IncrementOnceResult = "applied" | "replayed" | "reused" | "full" | Refused;

const INCREMENT_ONCE_RESULTS = { 1: "applied", 0: "replayed", [-1]: "reused", [-2]: "full" } as const;

function pairsOf(increments: readonly Increment[], into: (string | number)[] = []): (string | number)[] {
  for (const { key, value } of increments) into.push(key, value);
  return into;
}

function swapOutcome(reply: Awaited<ReturnType<RedisClient["tallySwap"]>>): SwapOutcome {
  switch (reply[0]) {
    case "empty":
      return { kind: "empty" };
    case "behind":
      return { kind: "behind", seq: BigInt(reply[1]) };
    case "new":
    case "resumed": {
      const [kind, batchId, seq, swappedAtMs] = reply;
      return {
        kind: "batch",
        batch: {
          batchId,
          seq: BigInt(seq),
          swappedAt: new Date(Number(swappedAtMs)),
          resumed: kind === "resumed",
          renumbered: kind === "new" && reply[4] === 1,
        },
      };
    }
  }
}

/** A script's "<position from 1>:<error>" as a Refused. */
function refused(reply: string): Refused {
  const colon = reply.indexOf(":");
  return { refused: Number(reply.slice(0, colon)) - 1, error: reply.slice(colon + 1) };
}

/**
 * Typed calls of tally's Lua scripts (lib/redis/scripts/*.lua, registered by createRedis): each builds its
 * script's KEYS from the keyspace, so no caller lists keys by position, and each turns the script's reply
 * into a value its caller can use. The writes a failover must not undo (increments, swaps) go through
 * `acknowledgements` and say whether the replicas confirmed them; without it they wait for no replica.
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
   * Starts a batch for the shard, or returns the unfinished one. Confirmed once the shard's replicas hold
   * the swap: only then may the batch be applied.
   */
  async swap(
    shard: ShardKeys,
    batchId: string,
    swappedAt: Date,
    minSeq: bigint,
  ): Promise<Acknowledged<SwapOutcome>> {
    const { value: reply, confirmed } = await this.#acknowledgements.write(shard.dirty, (master) =>
      master.tallySwap(
        shard.dirty,
        shard.flushing,
        shard.flushingMeta,
        shard.seq,
        batchId,
        swappedAt.getTime(),
        Number(minSeq),
      ),
    );
    return { value: swapOutcome(reply), confirmed };
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

  /**
   * Applies groups of increments to the shard in one round trip, each group whole or not at all; confirmed
   * once the shard's replicas hold them.
   */
  async incrementGroups(
    shard: ShardKeys,
    groups: readonly (readonly Increment[])[],
  ): Promise<Acknowledged<GroupResult[]>> {
    const args: (string | number)[] = [groups.length, ...groups.map((group) => group.length)];
    for (const group of groups) pairsOf(group, args);
    const { value: replies, confirmed } = await this.#acknowledgements.write(shard.dirty, (master) =>
      master.tallyIncrementBatch(shard.dirty, ...args),
    );
    const results = groups.map((_, index): GroupResult => {
      const reply = replies[index];
      return reply === 1 ? "applied" : refused(reply ?? "1:no reply for this group");
    });
    return { value: results, confirmed };
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
    const { value: reply, confirmed } = await this.#acknowledgements.write(record.shard.dirty, (master) =>
      master.tallyIncrementOnce(
        record.shard.dirty,
        record.key,
        record.shard.idempotencyIndex,
        fingerprint,
        limits.ttlSeconds,
        Date.now(),
        limits.maxRecordsInShard,
        record.digest,
        ...pairsOf(increments),
      ),
    );
    return { value: typeof reply === "string" ? refused(reply) : INCREMENT_ONCE_RESULTS[reply], confirmed };
  }

  /** Takes or extends a shard's syncer lease; true when `holder` holds it afterwards. */
  async claimLease(shard: ShardKeys, holder: string, ttlMs: number): Promise<boolean> {
    return (await this.#redis.tallyLeaseClaim(shard.lease, holder, ttlMs)) === 1;
  }

  /** Gives a shard's lease up if `holder` holds it. */
  async releaseLease(shard: ShardKeys, holder: string): Promise<void> {
    await this.#redis.tallyLeaseRelease(shard.lease, holder);
  }

  /** Says `holder` is alive for `aliveMs`; resolves to the number of syncers alive. */
  async syncersHeartbeat(holder: string, aliveMs: number): Promise<number> {
    return this.#redis.tallySyncersHeartbeat(this.#keyspace.syncers, holder, aliveMs);
  }

  /** Takes `holder` out of the living at once, so the others take its shards without waiting. */
  async syncerLeaves(holder: string): Promise<void> {
    await this.#redis.zrem(this.#keyspace.syncers, holder);
  }
}
