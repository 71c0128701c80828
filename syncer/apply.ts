import type pg from "pg";

export interface Batch {
  id: string;
  shard: number;
  seq: bigint;
  swappedAt: Date;
  /** The batch's keys; sorted when the batch spans several statements (see ROWS_PER_STATEMENT). */
  keys: string[];
  /** Decimal int64 deltas, index-aligned with keys. Kept as text: they may exceed 2^53. */
  deltas: string[];
}

export interface QuarantinedDelta {
  key: string;
  delta: string;
}

export type ApplyResult =
  | { applied: true; quarantined: QuarantinedDelta[] }
  /** The ledger already holds this batch: another syncer (or an earlier life of this one) committed it. */
  | { applied: false };

// Rows per statement. One statement per batch is fastest (Postgres sorts and upserts the whole set at once);
// past this many rows the batch is cut, to keep the array parameter (tens of MB) well inside V8's limits.
export const ROWS_PER_STATEMENT = 500_000;

const RECORD_BATCH_SQL = `
  INSERT INTO sync_batches (batch_id, shard, seq, swapped_at, key_count, delta_sum)
  VALUES ($1, $2, $3, $4, $5, $6)
  ON CONFLICT (batch_id) DO NOTHING`;

// Set-based upsert of one chunk, rows locked in byte order of the key ("C"), so that concurrent syncers
// lock shared rows in the same order and cannot deadlock.
const UPSERT_SQL = `
  INSERT INTO counters AS c (key, value, updated_at)
  SELECT key, delta, now() FROM unnest($1::text[], $2::bigint[]) AS t(key, delta) ORDER BY key COLLATE "C"
  ON CONFLICT (key) DO UPDATE SET value = c.value + excluded.value, updated_at = excluded.updated_at`;

// The same, for a chunk in which some total would leave bigint (the plain upsert failed with 22003): such
// a key is set aside with its delta in quarantined_deltas instead of failing the statement (and with it,
// every other key of the batch). Slower (a join and numeric arithmetic per row), so only used then.
const CHECKED_UPSERT_SQL = `
  WITH checked AS (
    SELECT t.key, t.delta,
           coalesce(c.value, 0)::numeric + t.delta
             NOT BETWEEN -9223372036854775808 AND 9223372036854775807 AS out_of_range
      FROM unnest($1::text[], $2::bigint[]) AS t(key, delta) LEFT JOIN counters c ON c.key = t.key
  ), set_aside AS (
    INSERT INTO quarantined_deltas (batch_id, key, delta, reason)
    SELECT $3, key, delta, 'total would leave the bigint range' FROM checked WHERE out_of_range
    RETURNING key, delta
  ), upserted AS (
    INSERT INTO counters AS c (key, value, updated_at)
    SELECT key, delta, now() FROM checked WHERE NOT out_of_range ORDER BY key COLLATE "C"
    ON CONFLICT (key) DO UPDATE SET value = c.value + excluded.value, updated_at = excluded.updated_at
  )
  SELECT key, delta::text AS delta FROM set_aside`;

const NUMERIC_VALUE_OUT_OF_RANGE = "22003";

const ADVANCE_SYNC_STATE_SQL = `
  INSERT INTO sync_state AS s (shard, synced_through, last_seq) VALUES ($1, $2, $3)
  ON CONFLICT (shard) DO UPDATE
    SET synced_through = greatest(s.synced_through, excluded.synced_through),
        last_seq = greatest(s.last_seq, excluded.last_seq)`;

export interface ApplyHooks {
  /** Runs inside the transaction after the upserts and before COMMIT (fault injection in tests). */
  beforeCommit?: () => Promise<void> | void;
}

/**
 * Applies a batch in ONE transaction that also records its id in the ledger. The ledger insert comes
 * first: a second syncer applying the same batch blocks on it until the first commits, then finds the id
 * taken and applies nothing. That is what makes a batch count exactly once, lease or no lease.
 */
export async function applyBatch(pool: pg.Pool, batch: Batch, hooks: ApplyHooks = {}): Promise<ApplyResult> {
  try {
    return await applyInTransaction(pool, batch, hooks, false);
  } catch (error) {
    // Some total would leave bigint. Rare, so the common path runs the plain upsert and only this retry
    // pays for the checked one, which sets such keys aside.
    if ((error as { code?: string }).code !== NUMERIC_VALUE_OUT_OF_RANGE) throw error;
    return applyInTransaction(pool, batch, hooks, true);
  }
}

async function applyInTransaction(
  pool: pg.Pool,
  batch: Batch,
  hooks: ApplyHooks,
  checkRange: boolean,
): Promise<ApplyResult> {
  const client = await pool.connect();
  // The pool listens for errors only on idle clients. Without a listener of our own, a connection error that
  // arrives between two of our queries (Postgres shutting down, our backend terminated) would be an uncaught
  // exception that kills the syncer; with it, the error surfaces through the next query, as any other.
  const ignoreConnectionError = () => {};
  client.on("error", ignoreConnectionError);
  let released = false;
  try {
    await client.query("BEGIN");
    const deltaSum = batch.deltas.reduce((sum, delta) => sum + BigInt(delta), 0n);
    const recorded = await client.query(RECORD_BATCH_SQL, [
      batch.id,
      batch.shard,
      batch.seq.toString(),
      batch.swappedAt,
      batch.keys.length,
      deltaSum.toString(),
    ]);
    if (recorded.rowCount === 0) {
      await client.query("ROLLBACK");
      return { applied: false };
    }
    const quarantined: QuarantinedDelta[] = [];
    for (let start = 0; start < batch.keys.length; start += ROWS_PER_STATEMENT) {
      const keys = batch.keys.slice(start, start + ROWS_PER_STATEMENT);
      const deltas = batch.deltas.slice(start, start + ROWS_PER_STATEMENT);
      if (checkRange) {
        const { rows } = await client.query<QuarantinedDelta>(CHECKED_UPSERT_SQL, [keys, deltas, batch.id]);
        quarantined.push(...rows);
      } else {
        await client.query(UPSERT_SQL, [keys, deltas]);
      }
    }
    await client.query(ADVANCE_SYNC_STATE_SQL, [batch.shard, batch.swappedAt, batch.seq.toString()]);
    await hooks.beforeCommit?.();
    await client.query("COMMIT");
    return { applied: true, quarantined };
  } catch (error) {
    // A failed ROLLBACK means the connection is broken; destroy it rather than return it to the pool.
    await client.query("ROLLBACK").catch((rollbackError: Error) => {
      client.release(rollbackError);
      released = true;
    });
    throw error;
  } finally {
    client.off("error", ignoreConnectionError);
    if (!released) client.release();
  }
}

/** Records that a shard had nothing pending at `observedAt`: Postgres is complete up to that instant. */
export async function markShardIdle(pool: pg.Pool, shard: number, observedAt: Date): Promise<void> {
  await pool.query(
    `INSERT INTO sync_state AS s (shard, synced_through, last_seq) VALUES ($1, $2, 0)
     ON CONFLICT (shard) DO UPDATE SET synced_through = greatest(s.synced_through, excluded.synced_through)`,
    [shard, observedAt],
  );
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
