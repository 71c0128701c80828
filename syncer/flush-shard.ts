import { randomUUID } from "node:crypto";
import type pg from "pg";
import type { RedisClient } from "../lib/redis/client.ts";
import type { ShardKeys } from "../lib/redis/keyspace.ts";
import type { Scripts } from "../lib/redis/scripts.ts";
import { BatchTransaction, isRowDataError, markShardIdle, readLedgerTotals } from "./apply.ts";
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
      /** True when the shard's sequence counter was missing in Redis (its data was lost). */
      renumbered: boolean;
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
  const { value: swap, confirmed } = await ctx.scripts.swap(keys, randomUUID(), observedAt, minSeq);
  if (swap.kind === "empty") {
    await markShardIdle(ctx.pool, shard, observedAt);
    return { kind: "idle", shard, observedAt };
  }
  if (swap.kind === "behind") {
    throw new RedisWentBackError(
      shard,
      `its batch sequence in Redis is ${swap.seq}, but Postgres has committed batch ${minSeq - 1n}`,
    );
  }
  const { batchId, seq, swappedAt, resumed, renumbered } = swap.batch;
  if (!confirmed) throw new SwapUnconfirmedError(shard, batchId);
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
  // A leftover the ledger knows must be the batch it applied: one that holds anything else comes from a
  // Redis that went back in time, and deleting it would hide that.
  if (result.kind === "already-applied" && resumed) result = await checkLeftover(ctx, keys, header);
  if (result.kind === "superseded") return { kind: "superseded", shard, batchId };
  await ctx.onStep?.("after-commit", shard);
  if (result.kind === "applied") ctx.onBatchApplied?.(result.batch);
  await ctx.scripts.finish(keys, batchId);
  if (seq + 1n > minSeq) ctx.minSeq.set(shard, seq + 1n);
  const outcome = { kind: "batch", shard, batchId, seq, swappedAt, resumed, renumbered } as const;
  return result.kind === "applied"
    ? { ...outcome, applied: true, keys: result.batch.keys.length, quarantined: result.quarantined }
    : { ...outcome, applied: false, keys: 0, quarantined: [] };
}

/**
 * Redis holds a shard's state that Postgres shows it once went beyond: a replica promoted without the
 * latest writes. Syncing the shard now could count increments twice, so it is not synced until an operator
 * has looked (docs/operations.md, "Redis went back in time").
 */
export class RedisWentBackError extends Error {
  override name = "RedisWentBackError";
  constructor(
    readonly shard: number,
    reason: string,
  ) {
    super(`Redis went back in time on shard ${shard}: ${reason}`);
  }
}

/** The replicas did not confirm a swap in time: the batch waits in Redis, and is resumed next cycle. */
export class SwapUnconfirmedError extends Error {
  override name = "SwapUnconfirmedError";
  constructor(
    readonly shard: number,
    readonly batchId: string,
  ) {
    super(
      `the replicas did not confirm the swap of shard ${shard}'s batch ${batchId} within REDIS_WAIT_TIMEOUT_MS`,
    );
  }
}

/**
 * After a batch was read with HSCAN: "superseded" when its meta names another batch (another syncer
 * finished it, and what was scanned may mix in a newer one; the ledger row held makes that impossible, and
 * this keeps the guarantee from resting on that reasoning alone), else "complete". Throws when the scan
 * missed fields: the flushing hash never changes, so that only happens when the server answering the scan
 * changed under it (a failover, a restart), and HSCAN's cursor is not valid on another server's table.
 */
async function checkScan(
  redis: RedisClient,
  keys: ShardKeys,
  header: BatchHeader,
  builder: BatchBuilder,
): Promise<"superseded" | "complete"> {
  const [batchId, fields] = await Promise.all([
    redis.hget(keys.flushingMeta, "batch"),
    redis.hlen(keys.flushing),
  ]);
  if (batchId !== header.id) return "superseded";
  if (builder.fieldsRead !== fields) throw new IncompleteScanError(header, builder.fieldsRead, fields);
  return "complete";
}

/** A batch's HSCAN missed fields: it is rolled back and read again from the start, next cycle. */
export class IncompleteScanError extends Error {
  override name = "IncompleteScanError";
  constructor(header: BatchHeader, read: number, fields: number) {
    super(
      `the read of shard ${header.shard}'s batch ${header.id} found ${read} of its ${fields} keys (Redis changed under the scan: a failover or a restart); it is read again next cycle`,
    );
  }
}

/**
 * Reads a leftover batch that the ledger already holds and compares it with what the ledger applied:
 * "already-applied" when they agree (it is only cleaned up), "superseded" when another syncer finished it
 * meanwhile; throws RedisWentBackError when they differ.
 */
async function checkLeftover(ctx: FlushContext, keys: ShardKeys, header: BatchHeader): Promise<ApplyResult> {
  const builder = new BatchBuilder(header);
  let cursor = "0";
  do {
    const [next, flat] = await ctx.redis.hscan(keys.flushing, cursor, "COUNT", ctx.scanCount);
    builder.addPage(flat);
    cursor = next;
  } while (cursor !== "0");
  if ((await checkScan(ctx.redis, keys, header, builder)) === "superseded") return { kind: "superseded" };
  const applied = await readLedgerTotals(ctx.pool, header.id);
  const found = builder.totals;
  if (applied !== undefined && (applied.keyCount !== found.keyCount || applied.deltaSum !== found.deltaSum)) {
    throw new RedisWentBackError(
      header.shard,
      `batch ${header.id} is back in Redis with ${found.keyCount} keys summing to ${found.deltaSum}, but the ledger applied it with ${applied.keyCount} keys summing to ${applied.deltaSum}`,
    );
  }
  return { kind: "already-applied" };
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
    // Run beside the last statements, so they cost no time: see checkScan.
    const scanned = checkScan(redis, keys, header, builder);
    scanned.catch(() => {});
    for (;;) {
      await upserting;
      const statement = builder.takeStatement(1, maxRows);
      if (statement === undefined) break;
      send(statement);
    }
    if ((await scanned) === "superseded") {
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
