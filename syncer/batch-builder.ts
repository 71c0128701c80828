import type { Batch } from "./apply.ts";

export interface Statement {
  keys: string[];
  /** Decimal int64 deltas, index-aligned with keys. */
  deltas: string[];
}

/**
 * Turns the HSCAN pages of a flushing hash into upsert statements of about `rowsPerStatement` rows, and
 * keeps the whole batch for the ledger totals and the batch listeners.
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
  #statement: Statement = { keys: [], deltas: [] };
  readonly #rowsPerStatement: number;

  constructor(header: Omit<Batch, "keys" | "deltas">, rowsPerStatement: number) {
    this.batch = { ...header, keys: [], deltas: [] };
    this.#rowsPerStatement = rowsPerStatement;
  }

  /** Adds one HSCAN page (field, value, field, value, ...). */
  addPage(flat: readonly string[]): void {
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const key = flat[i] as string;
      const delta = flat[i + 1] as string;
      if (this.#seen.has(key)) continue;
      this.#seen.add(key);
      if (delta === "0") continue;
      this.#statement.keys.push(key);
      this.#statement.deltas.push(delta);
      this.batch.keys.push(key);
      this.batch.deltas.push(delta);
      this.#deltaSum += BigInt(delta);
    }
  }

  /** The rows gathered so far as one statement, once there are enough of them (or `rest`: any at all). */
  takeStatement(rest = false): Statement | undefined {
    const count = this.#statement.keys.length;
    if (count === 0 || (!rest && count < this.#rowsPerStatement)) return undefined;
    const statement = this.#statement;
    this.#statement = { keys: [], deltas: [] };
    return statement;
  }

  get totals(): { keyCount: number; deltaSum: bigint } {
    return { keyCount: this.batch.keys.length, deltaSum: this.#deltaSum };
  }
}
