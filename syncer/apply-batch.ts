import type { ShardKeys } from "../lib/redis/keyspace.ts";
import type { Batch, BatchHeader, BatchTotals, QuarantinedDelta } from "./batch.ts";
import { BatchBuilder, type Statement } from "./batch-builder.ts";
import { BatchTransaction } from "./batch-transaction.ts";
import type { FlushContext } from "./flush-context.ts";
import { IncompleteScanError, RedisWentBackError } from "./protocol-errors.ts";
import { readLedgerTotals } from "./sync-state.ts";

// Rows per upsert statement: at least `minRows` before the first one starts (so that it starts early), at
// most `maxRows` (so that the text parameters, keys escaped, stay far below V8's and Postgres' limits).
const STATEMENT_ROWS = { minRows: 2_000, maxRows: 100_000 };

export type ApplyResult =
  | { kind: "applied"; batch: Batch; quarantined: QuarantinedDelta[] }
  /** The ledger already holds this batch: another syncer (or an earlier life of this one) committed it. */
  | { kind: "already-applied" }
  /** The flushing hash changed hands while we read it: another syncer finished this batch. */
  | { kind: "superseded" };

/**
 * Reads the flushing hash with HSCAN (never HGETALL: a million-field reply would block Redis and balloon our
 * memory) and upserts it as it comes, all in one ledgered transaction that commits only once every page is
 * in. `isolateRows`: each statement under a savepoint, refused rows set aside (BatchTransaction).
 */
export async function applyFlushingHash(
  ctx: FlushContext,
  keys: ShardKeys,
  header: BatchHeader,
  isolateRows: boolean,
): Promise<ApplyResult> {
  const scan = (cursor: string) => ctx.scripts.scanFlushing(keys, cursor, ctx.scanCount);
  // The first page is read while the transaction opens. If the read fails, the transaction that opened
  // meanwhile is rolled back: left open, it would hold the apply lock and stop every later batch.
  const opening = BatchTransaction.begin(ctx.pool, header, { isolateRows });
  // Handled here so that a failure to open (Postgres down) is not an unhandled rejection while the read
  // is awaited; it is thrown below, where `opening` is awaited.
  opening.catch(() => {});
  let page: { cursor: string; fields: string[] };
  let resets: string[];
  try {
    [resets, page] = await Promise.all([ctx.scripts.flushingResets(keys, ctx.scanCount), scan("0")]);
  } catch (error) {
    await (await opening.catch(() => null))?.rollback();
    throw error;
  }
  const transaction = await opening;
  if (transaction === null) return { kind: "already-applied" };
  try {
    await ctx.onStep?.("during-read", keys.shard);
    const builder = new BatchBuilder(header, resets);
    // The resets came before every delta of the batch (a reset drops the key's dirty delta), so they go first.
    await transaction.deleteResets(resets);
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
    for (;;) {
      builder.addPage(page.fields);
      if (!postgresBusy) {
        await upserting;
        const statement = builder.takeStatement(minRows, maxRows);
        if (statement !== undefined) send(statement);
      }
      if (page.cursor === "0") break;
      page = await scan(page.cursor);
    }
    // Run beside the last statements, so they cost no time: see checkScan.
    const scanned = checkScan(ctx, keys, header, builder);
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

/**
 * Reads a leftover batch that the ledger already holds and compares it with what the ledger applied:
 * "already-applied" when they agree (it is only cleaned up), "superseded" when another syncer finished it
 * meanwhile; throws RedisWentBackError when they differ.
 */
export async function checkLeftover(
  ctx: FlushContext,
  keys: ShardKeys,
  header: BatchHeader,
): Promise<ApplyResult> {
  const builder = new BatchBuilder(header, await ctx.scripts.flushingResets(keys, ctx.scanCount));
  let cursor = "0";
  do {
    const page = await ctx.scripts.scanFlushing(keys, cursor, ctx.scanCount);
    builder.addPage(page.fields);
    cursor = page.cursor;
  } while (cursor !== "0");
  if ((await checkScan(ctx, keys, header, builder)) === "superseded") return { kind: "superseded" };
  const applied = await readLedgerTotals(ctx.pool, header.id);
  const found = builder.totals;
  if (
    applied !== undefined &&
    (applied.keyCount !== found.keyCount ||
      applied.deltaSum !== found.deltaSum ||
      applied.resetCount !== found.resetCount)
  ) {
    throw new RedisWentBackError(
      header.shard,
      `batch ${header.id} is back in Redis with ${describeTotals(found)}, but the ledger applied it with ${describeTotals(applied)}`,
    );
  }
  return { kind: "already-applied" };
}

/**
 * After a batch was read with HSCAN: "superseded" when its meta names another batch (another syncer
 * finished it, and what was scanned may mix in a newer one; the ledger row held makes that impossible, and
 * this keeps the guarantee from resting on that reasoning alone), else "complete". Throws when the scan
 * missed fields: the flushing hash never changes, so that only happens when the server answering the scan
 * changed under it (a failover, a restart), and HSCAN's cursor is not valid on another server's table.
 */
async function checkScan(
  ctx: FlushContext,
  keys: ShardKeys,
  header: BatchHeader,
  builder: BatchBuilder,
): Promise<"superseded" | "complete"> {
  const { batchId, fields, resets } = await ctx.scripts.flushingState(keys);
  if (batchId !== header.id) return "superseded";
  if (builder.fieldsRead !== fields) throw new IncompleteScanError(header, builder.fieldsRead, fields);
  const resetsRead = builder.batch.resets.length;
  if (resetsRead !== resets) throw new IncompleteScanError(header, resetsRead, resets, "resets");
  return "complete";
}

function describeTotals({ keyCount, deltaSum, resetCount }: BatchTotals): string {
  return `${keyCount} keys summing to ${deltaSum} and ${resetCount} resets`;
}
