import type { ShardKeys } from "../lib/redis/keyspace.ts";
import type { BatchOutcome } from "./flush-shard.ts";

export interface ShardFailure {
  shard: number;
  error: unknown;
}

export interface PoolOptions {
  /** Shards flushed at once. */
  concurrency: number;
  /** One batch of a shard through the protocol. */
  flush: (keys: ShardKeys) => Promise<BatchOutcome>;
  /** True for a shard not to flush after all (its lease went to another syncer since the cycle began). */
  skip?: (shard: number) => boolean;
  /** Told of each outcome as it comes, not at the end: staleness moves as each shard commits. */
  onOutcome?: (outcome: BatchOutcome) => void;
  /** Holds the shards being flushed right now, whose leases must not be given up mid-batch. */
  busy: Set<number>;
}

export interface PoolResult {
  /** In shard order, whatever order they finished in. */
  outcomes: BatchOutcome[];
  /** Shards whose flush failed; their batch stays in Redis for the next cycle. In shard order. */
  failures: ShardFailure[];
  /** The shards flushed (those not skipped). */
  flushed: number[];
}

/**
 * Flushes `shards`, `concurrency` at a time; a failing shard is reported and does not hold up the others. A
 * shard whose batch was a leftover gets a second batch at once: the dirty hash behind it is due too.
 */
export async function flushShards(shards: readonly ShardKeys[], options: PoolOptions): Promise<PoolResult> {
  const outcomes: BatchOutcome[] = [];
  const failures: ShardFailure[] = [];
  const flushed: number[] = [];
  const record = (outcome: BatchOutcome) => {
    outcomes.push(outcome);
    options.onOutcome?.(outcome);
  };
  const flushOne = async (keys: ShardKeys) => {
    if (options.skip?.(keys.shard)) return;
    flushed.push(keys.shard);
    options.busy.add(keys.shard);
    try {
      const outcome = await options.flush(keys);
      record(outcome);
      if (outcome.kind === "batch" && outcome.resumed) record(await options.flush(keys));
    } catch (error) {
      failures.push({ shard: keys.shard, error });
    } finally {
      options.busy.delete(keys.shard);
    }
  };
  const due = [...shards];
  await Promise.all(
    Array.from({ length: Math.min(options.concurrency, due.length) }, async () => {
      for (let keys = due.shift(); keys !== undefined; keys = due.shift()) await flushOne(keys);
    }),
  );
  outcomes.sort((a, b) => a.shard - b.shard);
  failures.sort((a, b) => a.shard - b.shard);
  flushed.sort((a, b) => a - b);
  return { outcomes, failures, flushed };
}
