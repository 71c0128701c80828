import { createHash } from "node:crypto";
import type { Keyspace } from "../../lib/redis/keyspace.ts";
import type { Scripts } from "../../lib/redis/scripts.ts";
import { type IdempotencyKey, type IncrementStoreOptions, recordLimits } from "./increments.ts";
import { failedPart, type PartResult, partResultOf } from "./part-result.ts";
import { type WriteOutcome, writeOutcome } from "./write-outcome.ts";

export interface ResetRequest {
  key: string;
  idempotency?: IdempotencyKey;
}

/**
 * What became of a reset: a write's outcome, or "resharding" when another shard than the key's own still
 * holds deltas of it from before SYNC_SHARDS changed (nothing done). A reset is ordered against the
 * increments of its key's shard only, so it waits until the syncer has moved those to Postgres.
 */
export type ResetOutcome = WriteOutcome | { kind: "resharding" };

/** Sets counters back to zero, exactly once per Idempotency-Key when one is given. */
export type CounterResetter = (request: ResetRequest) => Promise<ResetOutcome>;

/**
 * A reset is one script in the key's shard (reset-2.lua, or reset-once-4.lua with its record), so each
 * increment of the key lands wholly before it (discarded) or after it (counted); the syncer deletes the row
 * in the transaction of the batch that carries the reset.
 */
export function createCounterResetter(
  scripts: Scripts,
  keyspace: Keyspace,
  options: IncrementStoreOptions,
): CounterResetter {
  const limits = recordLimits(options, keyspace);

  const heldElsewhere = async (key: string): Promise<boolean> => {
    const home = keyspace.shardOf(key);
    const others = keyspace.shards.filter((shard) => shard !== home);
    const held = await Promise.all(others.map((shard) => scripts.pending(shard, [key])));
    return held.some(({ dirty, flushing }) => (dirty[0] ?? flushing[0] ?? null) !== null);
  };

  return async function reset({ key, idempotency }) {
    let result: PartResult;
    try {
      if (await heldElsewhere(key)) return { kind: "resharding" };
      const once =
        idempotency === undefined
          ? undefined
          : {
              record: keyspace.idempotencyRecord(
                keyspace.shardOf(key),
                idempotency.clientId,
                idempotency.key,
              ),
              fingerprint: fingerprintOf(key),
              limits,
            };
      const { value, confirmed } = await scripts.reset(key, once);
      result = partResultOf(value, confirmed);
    } catch (error) {
      result = failedPart(error);
    }
    return writeOutcome([{ result, indexes: [0] }], 1, idempotency !== undefined);
  };
}

/** What a retry must repeat to be the same reset: the key. Distinct from every increment's fingerprint. */
function fingerprintOf(key: string): string {
  return createHash("sha256")
    .update(JSON.stringify(["reset", key]))
    .digest("base64url");
}
