import type { Batch, BatchHeader, BatchTotals } from "./batch.ts";

export interface Statement {
  keys: string[];
  /** Decimal int64 deltas, index-aligned with keys. */
  deltas: string[];
}

/**
 * Turns the HSCAN pages of a flushing hash into upsert statements, and keeps the whole batch for the ledger
 * totals and the batch listeners.
 *
 * HSCAN may return a field more than once (when the hash is rehashed between pages). The flushing hash no
 * longer changes, so every copy carries the same delta and only the first is kept: a second one would be
 * counted twice in another statement, or fail the statement it shares with the first. A key whose
 * increments cancelled out (delta 0) changes nothing and must not create a row.
 */
export class BatchBuilder {
  readonly batch: Batch;
  #deltaSum = 0n;
  readonly #seen = new Set<string>();
  /** Rows of `batch` before this index have gone into statements. */
  #taken = 0;

  constructor(header: BatchHeader, resets: string[]) {
    this.batch = { ...header, keys: [], deltas: [], resets };
  }

  /** Adds one HSCAN page (field, value, field, value, ...). */
  addPage(flat: readonly string[]): void {
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const key = flat[i] as string;
      const delta = flat[i + 1] as string;
      if (this.#seen.has(key)) continue;
      this.#seen.add(key);
      if (delta === "0") continue;
      this.batch.keys.push(key);
      this.batch.deltas.push(delta);
      this.#deltaSum += BigInt(delta);
    }
  }

  /**
   * The oldest rows gathered and not yet taken, at most `maxRows` of them, as one statement; undefined while
   * fewer than `minRows` are waiting.
   */
  takeStatement(minRows: number, maxRows: number): Statement | undefined {
    const waiting = this.batch.keys.length - this.#taken;
    if (waiting === 0 || waiting < minRows) return undefined;
    const start = this.#taken;
    this.#taken += Math.min(waiting, maxRows);
    return {
      keys: this.batch.keys.slice(start, this.#taken),
      deltas: this.batch.deltas.slice(start, this.#taken),
    };
  }

  /** Distinct fields read so far, those with a delta of 0 included: the hash's HLEN once all are read. */
  get fieldsRead(): number {
    return this.#seen.size;
  }

  get totals(): BatchTotals {
    return {
      keyCount: this.batch.keys.length,
      deltaSum: this.#deltaSum,
      resetCount: this.batch.resets.length,
    };
  }
}
