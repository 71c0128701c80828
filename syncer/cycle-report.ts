import type { BatchOutcome } from "./flush-shard.ts";
import type { ShardFailure } from "./shard-pool.ts";

/** What one sync cycle did: the Syncer's "cycle" event, read by the metrics, the activity and the log. */
export interface CycleReport {
  startedAt: Date;
  durationMs: number;
  outcomes: BatchOutcome[];
  /** Shards whose flush failed this cycle; their batch stays in Redis and is retried next cycle. */
  failures: ShardFailure[];
  /** Idempotency-Key records held over the cycle's shards; undefined when Redis could not be asked. */
  idempotencyRecords: number | undefined;
  /** The shards the cycle covered. */
  shards: number[];
}
