import type pg from "pg";
import type { BatchTotals } from "./batch.ts";

// What the syncer keeps in Postgres besides the counters: per shard, how far Postgres holds every accepted
// increment (sync_state), and the ledger of applied batches (sync_batches). Written in the batch's own
// transaction by batch-transaction.ts; these are the reads and writes outside it.

/** Records that a shard had nothing pending at `observedAt`: Postgres is complete up to that instant. */
export async function markShardIdle(pool: pg.Pool, shard: number, observedAt: Date): Promise<void> {
  await pool.query(
    `INSERT INTO sync_state AS s (shard, synced_through, last_seq) VALUES ($1, $2, 0)
     ON CONFLICT (shard) DO UPDATE SET synced_through = greatest(s.synced_through, excluded.synced_through)`,
    [shard, observedAt],
  );
}

/** The totals the ledger recorded for a batch it applied; undefined when it has no row. */
export async function readLedgerTotals(pool: pg.Pool, batchId: string): Promise<BatchTotals | undefined> {
  const { rows } = await pool.query<{ key_count: number; delta_sum: string; reset_count: number }>(
    "SELECT key_count, delta_sum::text, reset_count FROM sync_batches WHERE batch_id = $1",
    [batchId],
  );
  const row = rows[0];
  return row === undefined
    ? undefined
    : { keyCount: row.key_count, deltaSum: BigInt(row.delta_sum), resetCount: row.reset_count };
}

export interface ShardSyncState {
  /** The highest committed seq, so new batch numbers never go backwards after Redis data loss. */
  lastSeq: bigint;
  syncedThrough: Date;
}

export async function readSyncState(pool: pg.Pool): Promise<Map<number, ShardSyncState>> {
  const { rows } = await pool.query<{ shard: number; last_seq: bigint; synced_through: Date }>(
    "SELECT shard, last_seq, synced_through FROM sync_state",
  );
  return new Map(
    rows.map((row) => [row.shard, { lastSeq: row.last_seq, syncedThrough: row.synced_through }]),
  );
}

/** Deletes ledger rows committed more than `olderThanMs` ago; returns how many. */
export async function pruneLedger(pool: pg.Pool, olderThanMs: number): Promise<number> {
  const { rowCount } = await pool.query(
    "DELETE FROM sync_batches WHERE committed_at < now() - $1 * interval '1 millisecond'",
    [olderThanMs],
  );
  return rowCount ?? 0;
}
