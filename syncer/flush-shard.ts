import { randomUUID } from "node:crypto";
import type pg from "pg";
import type { RedisClient } from "../lib/redis/client.ts";
import type { ShardKeys } from "../lib/redis/keyspace.ts";
import type { Scripts } from "../lib/redis/scripts.ts";
import { BatchTransaction, isRowDataError, markShardIdle } from "./apply.ts";
import type { Batch, BatchHeader, QuarantinedDelta } from "./batch.ts";
import { BatchBuilder, type Statement } from "./batch-builder.ts";

/** The protocol steps, in order; fault-injection hooks fire at each. */
export type SyncStep = "before-swap" | "after-swap" | "during-read" | "before-commit" | "after-commit";

export type StepHook = (step: SyncStep, shard: number) => Promise<void> | void;

export interface FlushContext {
  /** The batch's reads (HSCAN, HGET); the protocol's steps go through `scripts`. */
  redis: RedisClient;
  scripts: Scripts;
  pool: pg.Pool;
  scanCount: number;
  /** Bounds on the rows per upsert statement (default STATEMENT_ROWS); tests lower them. */
  statementRows?: { minRows: number; maxRows: number };
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
      /** Keys applied: 0 when the batch was not applied here. */
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
 * HSCAN while applying it to Postgres in one ledgered transaction, and only then delete the flushing hash.
 * A crash at any step leaves either the dirty hash or the flushing hash in Redis and the ledger in Postgres
 * in a state the next run of this function finishes correctly.
 */
export async function flushShardOnce(ctx: FlushContext, keys: ShardKeys): Promise<BatchOutcome> {
  const { shard } = keys;
  await ctx.onStep?.("before-swap", shard);
  const observedAt = new Date();
  const minSeq = ctx.minSeq.get(shard) ?? 1n;
  const swapped = await ctx.scripts.swap(keys, randomUUID(), observedAt, minSeq);
  if (swapped === null) {
    await markShardIdle(ctx.pool, shard, observedAt);
    return { kind: "idle", shard, observedAt };
  }
  const { batchId, seq, swappedAt, resumed } = swapped;
  if (ctx.maxBatchAgeMs !== undefined && observedAt.getTime() - swappedAt.getTime() > ctx.maxBatchAgeMs) {
    throw new Error(
      `batch ${batchId} was swapped at ${swappedAt.toISOString()}, longer ago than the ledger retention: ` +
        "refusing to apply it (it may already be counted); it stays in Redis for an operator",
    );
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
  if (result.kind === "superseded") return { kind: "superseded", shard, batchId };
  await ctx.onStep?.("after-commit", shard);
  if (result.kind === "applied") ctx.onBatchApplied?.(result.batch);
  await ctx.scripts.finish(keys, batchId);
  if (seq + 1n > minSeq) ctx.minSeq.set(shard, seq + 1n);
  const outcome = { kind: "batch", shard, batchId, seq, swappedAt, resumed } as const;
  return result.kind === "applied"
    ? { ...outcome, applied: true, keys: result.batch.keys.length, quarantined: result.quarantined }
    : { ...outcome, applied: false, keys: 0, quarantined: [] };
}

// Rows per upsert statement: at least `minRows` before the first one starts (so that it starts early), at
// most `maxRows` (so that the text parameters, keys escaped, stay far below V8's and Postgres' limits).
const STATEMENT_ROWS = { minRows: 2_000, maxRows: 100_000 };

type ApplyResult =
  | { kind: "applied"; batch: Batch; quarantined: QuarantinedDelta[] }
  /** The ledger already holds this batch: another syncer (or an earlier life of this one) committed it. */
  | { kind: "already-applied" }
  /** The flushing hash changed hands while we read it: another syncer finished this batch. */
  | { kind: "superseded" };

/**
 * Reads the flushing hash with HSCAN (never HGETALL: a million-field reply would block Redis and balloon our
 * memory) and upserts it as it comes, all in one ledgered transaction that commits only once every page is
 * in.
 */
async function applyFlushingHash(
  ctx: FlushContext,
  keys: ShardKeys,
  header: BatchHeader,
  isolateRows: boolean,
): Promise<ApplyResult> {
  const { redis } = ctx;
  const scan = (cursor: string) => redis.hscan(keys.flushing, cursor, "COUNT", ctx.scanCount);
  // The first page is read while the transaction opens. If the read fails, the transaction that opened
  // meanwhile is rolled back: left open, it would hold the apply lock and stop every later batch.
  const opening = BatchTransaction.begin(ctx.pool, header, { isolateRows });
  // Handled here so that a failure to open (Postgres down) is not an unhandled rejection while the read
  // is awaited; it is thrown below, where `opening` is awaited.
  opening.catch(() => {});
  let firstPage: [cursor: string, fields: string[]];
  try {
    firstPage = await scan("0");
  } catch (error) {
    await (await opening.catch(() => null))?.rollback();
    throw error;
  }
  const transaction = await opening;
  if (transaction === null) return { kind: "already-applied" };
  try {
    await ctx.onStep?.("during-read", keys.shard);
    const builder = new BatchBuilder(header);
    const { minRows, maxRows } = { ...STATEMENT_ROWS, ...ctx.statementRows };
    // Postgres gets the rows read so far whenever it is free: the first statement goes as soon as there are
    // `minRows`, and while it runs the read carries on, so later statements are as large as the read got
    // ahead (up to `maxRows`): a big batch goes in few big sorted statements. One statement at a time; a
    // failure is thrown at the next await of `upserting`, which is marked handled meanwhile.
    let upserting: Promise<void> = Promise.resolve();
    let postgresBusy = false;
    const send = (statement: Statement) => {
      postgresBusy = true;
      upserting = transaction.upsert(statement.keys, statement.deltas);
      const free = () => {
        postgresBusy = false;
      };
      upserting.then(free, free);
    };
    let [cursor, flat] = firstPage;
    for (;;) {
      builder.addPage(flat);
      if (!postgresBusy) {
        await upserting;
        const statement = builder.takeStatement(minRows, maxRows);
        if (statement !== undefined) send(statement);
      }
      if (cursor === "0") break;
      [cursor, flat] = await scan(cursor);
    }
    // If the meta changed, another syncer finished this batch and what we scanned may mix in a newer one.
    // The ledger row we hold makes that impossible; the check costs no time (it runs beside the last
    // statements) and keeps the guarantee from resting on that reasoning alone.
    const meta = redis.hget(keys.flushingMeta, "batch");
    meta.catch(() => {});
    for (;;) {
      await upserting;
      const statement = builder.takeStatement(1, maxRows);
      if (statement === undefined) break;
      send(statement);
    }
    const current = await meta;
    if (current !== header.id) {
      await transaction.rollback();
      return { kind: "superseded" };
    }
    const quarantined = await transaction.commit(builder.totals, () =>
      ctx.onStep?.("before-commit", keys.shard),
    );
    return { kind: "applied", batch: builder.batch, quarantined };
  } catch (error) {
    await transaction.rollback();
    throw error;
  }
}
