/** A batch: one shard's dirty hash as the syncer swapped it aside, applied to Postgres as one transaction. */
export interface Batch {
  id: string;
  shard: number;
  seq: bigint;
  swappedAt: Date;
  keys: string[];
  /** Decimal int64 deltas, index-aligned with keys. Kept as text: they may exceed 2^53. */
  deltas: string[];
  /**
   * Keys reset before the batch's deltas were accepted: their rows are deleted first, so that each counts
   * from zero what the batch then adds.
   */
  resets: string[];
}

/** What the ledger records of a batch, to compare a leftover batch with what was applied. */
export interface BatchTotals {
  keyCount: number;
  deltaSum: bigint;
  resetCount: number;
}

export interface QuarantinedDelta {
  key: string;
  delta: string;
  /** Postgres' error for the row, with its SQLSTATE. */
  reason: string;
}

/** What identifies a batch in the ledger. */
export type BatchHeader = Pick<Batch, "id" | "shard" | "seq" | "swappedAt">;
