import { randomUUID } from "node:crypto";
import type { ShardKeys } from "../lib/redis/keyspace.ts";
import { type ApplyResult, applyFlushingHash, checkLeftover } from "./apply-batch.ts";
import type { QuarantinedDelta } from "./batch.ts";
import { isRowDataError } from "./batch-transaction.ts";
import type { FlushContext } from "./flush-context.ts";
import { BatchTooOldError, RedisWentBackError, SwapUnconfirmedError } from "./protocol-errors.ts";
import { markShardIdle } from "./sync-state.ts";

export type BatchOutcome =
  /** Nothing was pending at `observedAt`: Postgres is complete up to then. */
  | { kind: "idle"; shard: number; observedAt: Date }
  | {
      kind: "batch";
      shard: number;
      batchId: string;
      seq: bigint;
      swappedAt: Date;
      /** Keys applied: 0 when the batch was not applied here. */
      keys: number;
      /** False when the ledger already had this batch (finished elsewhere); it was only cleaned up. */
      applied: boolean;
      /** True for a batch left over by a crashed or slower syncer. */
      resumed: boolean;
      /** True when the shard's sequence counter was missing in Redis (its data was lost). */
      renumbered: boolean;
      quarantined: QuarantinedDelta[];
    }
  /** The flushing hash changed hands while we read it: another syncer finished this batch. */
  | { kind: "superseded"; shard: number; batchId: string };

/**
 * Runs one batch of one shard through the protocol: swap (or take over an unfinished batch) and wait for the
 * replicas to hold the swap, read it with HSCAN while applying it to Postgres in one ledgered transaction,
 * and only then delete the flushing hash. A crash at any step leaves either the dirty hash or the flushing
 * hash in Redis and the ledger in Postgres in a state the next run of this function finishes correctly.
 */
export async function flushShardOnce(ctx: FlushContext, keys: ShardKeys): Promise<BatchOutcome> {
  const { shard } = keys;
  await ctx.onStep?.("before-swap", shard);
  const observedAt = new Date();
  const floor = ctx.progress.nextSeqFloor(shard);
  const { value: swap, confirmed } = await ctx.scripts.swap(keys, randomUUID(), observedAt, floor);
  if (swap.kind === "empty") {
    await markShardIdle(ctx.pool, shard, observedAt);
    return { kind: "idle", shard, observedAt };
  }
  if (swap.kind === "behind") {
    throw new RedisWentBackError(
      shard,
      `its batch sequence in Redis is ${swap.seq}, but Postgres has committed batch ${floor - 1n}`,
    );
  }
  const { batchId, seq, swappedAt, resumed, renumbered } = swap.batch;
  if (!confirmed) throw new SwapUnconfirmedError(shard, batchId);
  if (ctx.maxBatchAgeMs !== undefined && observedAt.getTime() - swappedAt.getTime() > ctx.maxBatchAgeMs) {
    throw new BatchTooOldError(batchId, swappedAt);
  }
  await ctx.onStep?.("after-swap", shard);

  const header = { id: batchId, shard, seq, swappedAt };
  let result: ApplyResult;
  try {
    result = await applyFlushingHash(ctx, keys, header, false);
  } catch (error) {
    // Postgres refused some row (a total that would leave bigint, a key it cannot index). Rare, so the
    // common path runs plain statements and only this retry, which reads the batch again, pays for finding
    // the refused rows and setting them aside: one bad key never blocks its shard.
    if (!isRowDataError(error)) throw error;
    result = await applyFlushingHash(ctx, keys, header, true);
  }
  // A leftover the ledger knows must be the batch it applied: one that holds anything else comes from a
  // Redis that went back in time, and deleting it would hide that.
  if (result.kind === "already-applied" && resumed) result = await checkLeftover(ctx, keys, header);
  if (result.kind === "superseded") return { kind: "superseded", shard, batchId };
  await ctx.onStep?.("after-commit", shard);
  if (result.kind === "applied") ctx.onBatchApplied?.(result.batch);
  await ctx.scripts.finish(keys, batchId);
  ctx.progress.committed(shard, seq);
  const outcome = { kind: "batch", shard, batchId, seq, swappedAt, resumed, renumbered } as const;
  return result.kind === "applied"
    ? { ...outcome, applied: true, keys: result.batch.keys.length, quarantined: result.quarantined }
    : { ...outcome, applied: false, keys: 0, quarantined: [] };
}
