import type pg from "pg";
import type { Scripts } from "../lib/redis/scripts.ts";
import type { Batch } from "./batch.ts";
import type { ShardProgress } from "./shard-progress.ts";

/** The protocol steps, in order; fault-injection hooks fire at each. */
export type SyncStep = "before-swap" | "after-swap" | "during-read" | "before-commit" | "after-commit";

export type StepHook = (step: SyncStep, shard: number) => Promise<void> | void;

/** What one batch's way through the protocol needs (flush-shard.ts), handed in by the syncer. */
export interface FlushContext {
  /** Every Redis command of the protocol. */
  scripts: Scripts;
  pool: pg.Pool;
  scanCount: number;
  /** Bounds on the rows per upsert statement (default 2,000 to 100,000); tests lower them. */
  statementRows?: { minRows: number; maxRows: number };
  /** The lowest seq a shard's next batch may have, and told of each batch committed. */
  progress: Pick<ShardProgress, "nextSeqFloor" | "committed">;
  onStep?: StepHook;
  /** A batch swapped longer ago than this is refused (BatchTooOldError). Undefined: no limit. */
  maxBatchAgeMs?: number;
  /**
   * Called right after this syncer committed a batch, with the batch itself (keys and deltas by reference:
   * a listener must not mutate them, nor throw, nor block). Not called for a batch the ledger already had.
   */
  onBatchApplied?: (batch: Batch) => void;
}
