import type pg from "pg";
import { textArrayLiteral } from "./array-literal.ts";
import type { BatchHeader, BatchTotals, QuarantinedDelta } from "./batch.ts";

// Every transaction that writes a shard's counters holds that shard's lock until it ends
// (pg_advisory_xact_lock). A syncer upserts a batch statement by statement as it reads it, each statement in
// key order but the statements in HSCAN order; two transactions on one shard's keys at once (two syncers
// while a lease changes hands) could lock shared rows in opposite orders and deadlock. Taking turns per
// shard rules that out; shards are key-disjoint, so transactions of different shards share no row and run
// at once. One round trip: "tall" (0x74616c6c) and the shard number are the lock's id (the shard is an
// integer of ours, not input).
function beginAndLockSql(shard: number): string {
  return `BEGIN; SELECT pg_advisory_xact_lock(1952541804, ${Math.trunc(shard)})`;
}

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

// A row Postgres refuses for what it holds, not for the state of the server: a total that would leave bigint
// (22003), a key too long for the primary key's index (54000), any other data exception (class 22) or
// constraint (class 23). Connection loss, timeouts, a full disk or too little memory are none of these: the
// batch is then retried whole, later.
const ROW_DATA_ERROR_CLASSES = new Set(["22", "23", "54"]);

/** True when a statement failed over the data of some row: retry the batch with `isolateRows`. */
export function isRowDataError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && ROW_DATA_ERROR_CLASSES.has(code.slice(0, 2));
}

// A reset deletes the row: the key counts from zero what the batch then adds (a key with nothing added stays
// without a row, as if never counted).
const DELETE_RESETS_SQL = "DELETE FROM counters WHERE key = ANY($1::text[])";

const SET_ASIDE_SQL = "INSERT INTO quarantined_deltas (batch_id, key, delta, reason) VALUES ($1, $2, $3, $4)";

// One round trip: the ledger row gets the batch's totals and the time of its commit, and the shard's sync
// state moves forward. clock_timestamp(), not the column's default now(): that is when the transaction
// began, the whole apply earlier.
const FINISH_BATCH_SQL = `
  WITH ledger AS (
    UPDATE sync_batches
       SET key_count = $4, delta_sum = $5, reset_count = $7, committed_at = clock_timestamp()
     WHERE batch_id = $6
  )
  INSERT INTO sync_state AS s (shard, synced_through, last_seq) VALUES ($1, $2, $3)
  ON CONFLICT (shard) DO UPDATE
    SET synced_through = greatest(s.synced_through, excluded.synced_through),
        last_seq = greatest(s.last_seq, excluded.last_seq)`;

export interface BatchTransactionOptions {
  /**
   * Run each statement under a savepoint and, when Postgres refuses a row of it, split it until the
   * refused rows stand alone: those are set aside in quarantined_deltas, every other row is applied.
   * Slower (more round trips, and rows of a failed half sent again), so used only for a batch whose plain
   * apply failed with a row data error.
   */
  isolateRows: boolean;
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
  readonly #isolateRows: boolean;
  readonly #quarantined: QuarantinedDelta[] = [];
  #ended = false;

  private constructor(client: pg.PoolClient, header: BatchHeader, isolateRows: boolean) {
    this.#client = client;
    this.#header = header;
    this.#isolateRows = isolateRows;
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
    const transaction = new BatchTransaction(client, header, options.isolateRows);
    try {
      await client.query(beginAndLockSql(header.shard));
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

  /** Deletes the rows of the batch's reset keys; before any upsert, since the deltas came after the resets. */
  async deleteResets(keys: string[]): Promise<void> {
    if (keys.length > 0) await this.#client.query(DELETE_RESETS_SQL, [textArrayLiteral(keys)]);
  }

  /** Upserts one statement's rows: keys not seen before in this batch, non-zero deltas. */
  async upsert(keys: string[], deltas: string[]): Promise<void> {
    if (this.#isolateRows) await this.#upsertIsolatingRows(keys, deltas);
    else await this.#client.query(UPSERT_SQL, [textArrayLiteral(keys), textArrayLiteral(deltas)]);
  }

  async #upsertIsolatingRows(keys: string[], deltas: string[]): Promise<void> {
    let refusal: unknown;
    await this.#client.query("SAVEPOINT statement");
    try {
      await this.#client.query(UPSERT_SQL, [textArrayLiteral(keys), textArrayLiteral(deltas)]);
    } catch (error) {
      if (!isRowDataError(error)) throw error;
      refusal = error;
      await this.#client.query("ROLLBACK TO SAVEPOINT statement");
    }
    await this.#client.query("RELEASE SAVEPOINT statement");
    if (refusal === undefined) return;
    const [key] = keys;
    const [delta] = deltas;
    if (keys.length === 1 && key !== undefined && delta !== undefined) {
      const { message, code } = refusal as { message: string; code: string };
      const setAside = { key, delta, reason: `${message} (SQLSTATE ${code})` };
      await this.#client.query(SET_ASIDE_SQL, [this.#header.id, key, delta, setAside.reason]);
      this.#quarantined.push(setAside);
      return;
    }
    const half = Math.ceil(keys.length / 2);
    await this.#upsertIsolatingRows(keys.slice(0, half), deltas.slice(0, half));
    await this.#upsertIsolatingRows(keys.slice(half), deltas.slice(half));
  }

  /** Records the batch's totals, advances the shard's sync state and commits; returns what was set aside. */
  async commit(totals: BatchTotals, beforeCommit?: () => Promise<void> | void): Promise<QuarantinedDelta[]> {
    const { shard, swappedAt, seq, id } = this.#header;
    await this.#client.query(FINISH_BATCH_SQL, [
      shard,
      swappedAt,
      seq.toString(),
      totals.keyCount,
      totals.deltaSum.toString(),
      id,
      totals.resetCount,
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
