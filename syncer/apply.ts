import type pg from "pg";
import { textArrayLiteral } from "./array-literal.ts";

export interface Batch {
  id: string;
  shard: number;
  seq: bigint;
  swappedAt: Date;
  keys: string[];
  /** Decimal int64 deltas, index-aligned with keys. Kept as text: they may exceed 2^53. */
  deltas: string[];
}

export interface QuarantinedDelta {
  key: string;
  delta: string;
}

/** What identifies a batch in the ledger. */
export type BatchHeader = Pick<Batch, "id" | "shard" | "seq" | "swappedAt">;

// Every transaction that writes counters holds this lock until it ends (pg_advisory_xact_lock). A syncer
// upserts a batch statement by statement as it reads it, each statement in key order but the statements in
// HSCAN order; two transactions doing that at once could lock shared rows in opposite orders and deadlock.
// Taking turns rules that out, and costs nothing while one leader does all the work.
// One round trip, no parameters: "tall" (0x74616c6c) is the lock's id.
const BEGIN_AND_LOCK_SQL = "BEGIN; SELECT pg_advisory_xact_lock(1952541804)";

// The totals are filled in at commit, once the whole batch has been read.
const RECORD_BATCH_SQL = `
  INSERT INTO sync_batches (batch_id, shard, seq, swapped_at, key_count, delta_sum)
  VALUES ($1, $2, $3, $4, 0, 0)
  ON CONFLICT (batch_id) DO NOTHING`;

// Set-based upsert of one statement's rows, locked in byte order of the key ("C").
const UPSERT_SQL = `
  INSERT INTO counters AS c (key, value, updated_at)
  SELECT key, delta, now() FROM unnest($1::text[], $2::bigint[]) AS t(key, delta) ORDER BY key COLLATE "C"
  ON CONFLICT (key) DO UPDATE SET value = c.value + excluded.value, updated_at = excluded.updated_at`;

// The same, for a batch in which some total would leave bigint (the plain upsert failed with 22003): such
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

/** The SQLSTATE of a plain upsert whose total would leave bigint: retry the batch with `checkRange`. */
export const NUMERIC_VALUE_OUT_OF_RANGE = "22003";

// One round trip: the ledger row gets the batch's totals and the time of its commit, and the shard's sync
// state moves forward. clock_timestamp(), not the column's default now(): that is when the transaction
// began, the whole apply earlier.
const FINISH_BATCH_SQL = `
  WITH ledger AS (
    UPDATE sync_batches SET key_count = $4, delta_sum = $5, committed_at = clock_timestamp()
     WHERE batch_id = $6
  )
  INSERT INTO sync_state AS s (shard, synced_through, last_seq) VALUES ($1, $2, $3)
  ON CONFLICT (shard) DO UPDATE
    SET synced_through = greatest(s.synced_through, excluded.synced_through),
        last_seq = greatest(s.last_seq, excluded.last_seq)`;

export interface BatchTransactionOptions {
  /** Upsert with the checked statement, which sets aside totals that would leave bigint. */
  checkRange: boolean;
}

/**
 * One batch applied in ONE transaction that also records its id in the ledger, fed statement by statement
 * while the batch is still being read. The ledger row is written first: a second syncer applying the same
 * batch blocks on it until the first commits, then finds the id taken and applies nothing. That, not the
 * lease, is what makes a batch count exactly once.
 */
export class BatchTransaction {
  readonly #client: pg.PoolClient;
  readonly #header: BatchHeader;
  readonly #checkRange: boolean;
  readonly #quarantined: QuarantinedDelta[] = [];
  #ended = false;

  private constructor(client: pg.PoolClient, header: BatchHeader, checkRange: boolean) {
    this.#client = client;
    this.#header = header;
    this.#checkRange = checkRange;
  }

  /** Opens the transaction and records the batch; null when the ledger already holds it (nothing done). */
  static async begin(
    pool: pg.Pool,
    header: BatchHeader,
    options: BatchTransactionOptions,
  ): Promise<BatchTransaction | null> {
    const client = await pool.connect();
    // The pool listens for errors only on idle clients. Without a listener of our own, a connection error
    // that arrives between two of our queries (Postgres shutting down, our backend terminated) would be an
    // uncaught exception that kills the syncer; with it, the error surfaces through the next query.
    client.on("error", ignoreConnectionError);
    const transaction = new BatchTransaction(client, header, options.checkRange);
    try {
      await client.query(BEGIN_AND_LOCK_SQL);
      const recorded = await client.query(RECORD_BATCH_SQL, [
        header.id,
        header.shard,
        header.seq.toString(),
        header.swappedAt,
      ]);
      if (recorded.rowCount === 0) {
        await transaction.rollback();
        return null;
      }
      return transaction;
    } catch (error) {
      await transaction.rollback();
      throw error;
    }
  }

  /** Upserts one statement's rows: keys not seen before in this batch, non-zero deltas. */
  async upsert(keys: string[], deltas: string[]): Promise<void> {
    const arrays = [textArrayLiteral(keys), textArrayLiteral(deltas)];
    if (this.#checkRange) {
      const { rows: setAside } = await this.#client.query<QuarantinedDelta>(CHECKED_UPSERT_SQL, [
        ...arrays,
        this.#header.id,
      ]);
      this.#quarantined.push(...setAside);
    } else {
      await this.#client.query(UPSERT_SQL, arrays);
    }
  }

  /** Records the batch's totals, advances the shard's sync state and commits; returns what was set aside. */
  async commit(
    totals: { keyCount: number; deltaSum: bigint },
    beforeCommit?: () => Promise<void> | void,
  ): Promise<QuarantinedDelta[]> {
    const { shard, swappedAt, seq, id } = this.#header;
    await this.#client.query(FINISH_BATCH_SQL, [
      shard,
      swappedAt,
      seq.toString(),
      totals.keyCount,
      totals.deltaSum.toString(),
      id,
    ]);
    await beforeCommit?.();
    await this.#client.query("COMMIT");
    this.#end();
    return this.#quarantined;
  }

  /** Undoes everything; safe after a failed statement, and more than once. */
  async rollback(): Promise<void> {
    if (this.#ended) return;
    try {
      await this.#client.query("ROLLBACK");
      this.#end();
    } catch (error) {
      // A failed ROLLBACK means the connection is broken; destroy it rather than return it to the pool.
      this.#end(error instanceof Error ? error : new Error(String(error)));
    }
  }

  #end(brokenConnection?: Error): void {
    this.#ended = true;
    this.#client.off("error", ignoreConnectionError);
    this.#client.release(brokenConnection);
  }
}

function ignoreConnectionError(): void {}

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
