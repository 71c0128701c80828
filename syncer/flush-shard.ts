import { randomUUID } from "node:crypto";
import type pg from "pg";
import type { RedisClient } from "../lib/redis/client.ts";
import type { ShardKeys } from "../lib/redis/keys.ts";
import { applyBatch, type Batch, markShardIdle, type QuarantinedDelta, ROWS_PER_STATEMENT } from "./apply.ts";

/** The protocol steps, in order; fault-injection hooks fire at each. */
export type SyncStep = "before-swap" | "after-swap" | "during-read" | "before-commit" | "after-commit";

export type StepHook = (step: SyncStep, shard: number) => Promise<void> | void;

export interface FlushContext {
  redis: RedisClient;
  pool: pg.Pool;
  scanCount: number;
  /** Lowest acceptable next seq per shard (last committed + 1); raised as batches commit. */
  minSeq: Map<number, bigint>;
  onStep?: StepHook;
  /**
   * A batch swapped longer ago than this is refused: its ledger row, if it was ever committed, may have been
   * pruned, so applying it could count it twice. It stays in Redis, failing its shard loudly every cycle,
   * for an operator to look at. Undefined: no limit.
   */
  maxBatchAgeMs?: number;
  /**
   * Called right after this syncer committed a batch, with the batch itself (keys and deltas by reference:
   * a listener must not mutate them, nor throw, nor block). Not called for a batch the ledger already had.
   */
  onBatchApplied?: (batch: Batch) => void;
}

export type BatchOutcome =
  /** Nothing was pending at `observedAt`: Postgres is complete up to then. */
  | { kind: "idle"; shard: number; observedAt: Date }
  | {
      kind: "batch";
      shard: number;
      batchId: string;
      seq: bigint;
      swappedAt: Date;
      keys: number;
      /** False when the ledger already had this batch (finished elsewhere); it was only cleaned up. */
      applied: boolean;
      /** True for a batch left over by a crashed or slower syncer. */
      resumed: boolean;
      quarantined: QuarantinedDelta[];
    }
  /** The flushing hash changed hands while we read it: another syncer finished this batch. */
  | { kind: "superseded"; shard: number; batchId: string };

/**
 * Runs one batch of one shard through the protocol: swap (or take over an unfinished batch), read it with
 * HSCAN, apply it to Postgres in one ledgered transaction, and only then delete the flushing hash.
 * A crash at any step leaves either the dirty hash or the flushing hash in Redis and the ledger in Postgres
 * in a state the next run of this function finishes correctly.
 */
export async function flushShardOnce(ctx: FlushContext, keys: ShardKeys): Promise<BatchOutcome> {
  const { redis } = ctx;
  const { shard } = keys;
  await ctx.onStep?.("before-swap", shard);
  const observedAt = new Date();
  const minSeq = ctx.minSeq.get(shard) ?? 1n;
  const swapped = await redis.tallySwap(
    keys.dirty,
    keys.flushing,
    keys.flushingMeta,
    keys.seq,
    randomUUID(),
    observedAt.getTime(),
    Number(minSeq),
  );
  if (swapped === null) {
    await markShardIdle(ctx.pool, shard, observedAt);
    return { kind: "idle", shard, observedAt };
  }
  const [batchId, seqText, swappedAtMs, resumed] = swapped;
  const seq = BigInt(seqText);
  const swappedAt = new Date(Number(swappedAtMs));
  if (ctx.maxBatchAgeMs !== undefined && observedAt.getTime() - swappedAt.getTime() > ctx.maxBatchAgeMs) {
    throw new Error(
      `batch ${batchId} was swapped at ${swappedAt.toISOString()}, longer ago than the ledger retention: ` +
        "refusing to apply it (it may already be counted); it stays in Redis for an operator",
    );
  }
  await ctx.onStep?.("after-swap", shard);

  const entries = await readFlushingHash(ctx, keys);
  // If the meta changed, another syncer deleted this batch after committing it, and what we scanned may
  // mix in a newer batch; the ledger would refuse it anyway, but there is no point trying.
  if ((await redis.hget(keys.flushingMeta, "batch")) !== batchId)
    return { kind: "superseded", shard, batchId };

  const batch = toBatch(batchId, shard, seq, swappedAt, entries);
  const result = await applyBatch(ctx.pool, batch, {
    beforeCommit: () => ctx.onStep?.("before-commit", shard),
  });
  await ctx.onStep?.("after-commit", shard);
  if (result.applied) ctx.onBatchApplied?.(batch);
  await redis.tallyFinish(keys.flushing, keys.flushingMeta, batchId);
  if (seq + 1n > minSeq) ctx.minSeq.set(shard, seq + 1n);
  return {
    kind: "batch",
    shard,
    batchId,
    seq,
    swappedAt,
    keys: batch.keys.length,
    applied: result.applied,
    resumed: resumed === 1,
    quarantined: result.applied ? result.quarantined : [],
  };
}

/** HSCAN in chunks (never HGETALL: a million-field reply would block Redis and balloon our memory). */
async function readFlushingHash(ctx: FlushContext, keys: ShardKeys): Promise<Map<string, string>> {
  // HSCAN may return a field more than once; the flushing hash no longer changes, so the last copy wins.
  const entries = new Map<string, string>();
  let cursor = "0";
  let first = true;
  do {
    const [next, flat] = await ctx.redis.hscan(keys.flushing, cursor, "COUNT", ctx.scanCount);
    for (let i = 0; i + 1 < flat.length; i += 2) entries.set(flat[i] as string, flat[i + 1] as string);
    if (first) await ctx.onStep?.("during-read", keys.shard);
    first = false;
    cursor = next;
  } while (cursor !== "0");
  return entries;
}

function toBatch(
  id: string,
  shard: number,
  seq: bigint,
  swappedAt: Date,
  entries: Map<string, string>,
): Batch {
  const keys: string[] = [];
  for (const [key, delta] of entries) {
    // Increments that cancelled out (or values of 0) change nothing and must not create rows.
    if (delta !== "0") keys.push(key);
  }
  // Postgres orders the rows within a statement; a batch cut into several statements is cut in one global
  // order, so that every syncer takes the row locks of a shared key range in the same sequence.
  if (keys.length > ROWS_PER_STATEMENT) keys.sort();
  return { id, shard, seq, swappedAt, keys, deltas: keys.map((key) => entries.get(key) as string) };
}
