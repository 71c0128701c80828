import type pg from "pg";
import type { Keyspace } from "../../lib/redis/keyspace.ts";
import type { ShardPending } from "../../lib/redis/script-replies.ts";
import type { Scripts } from "../../lib/redis/scripts.ts";

export interface CounterReading {
  key: string;
  /** The total in Postgres. */
  persisted: bigint;
  /** Accepted increments Postgres does not hold yet (dirty and flushing hashes). */
  pending: bigint;
  /** Every increment accepted before this instant is in `persisted`; null before the first sync. */
  persistedAsOf: Date | null;
  /** False when neither Postgres nor Redis knows the key. */
  found: boolean;
}

/** Reads a counter; rejects with a ReadFailure when a store cannot answer. */
export type CounterReader = (key: string) => Promise<CounterReading>;

/** A store could not answer a read: Redis (the pending deltas) or Postgres (the persisted total). */
export class ReadFailure extends Error {
  override name = "ReadFailure";
  constructor(
    readonly store: "redis" | "postgres",
    cause: unknown,
  ) {
    super(`${store} could not be read`, { cause });
  }
}

interface ShardState {
  shard: number;
  lastSeq: string;
  syncedThrough: string;
}

// One round trip: the key's row, if any, and every shard's sync position.
const PERSISTED_SQL = `
  SELECT c.value,
         (SELECT coalesce(json_agg(json_build_object(
                   'shard', s.shard, 'lastSeq', s.last_seq::text, 'syncedThrough', s.synced_through)), '[]')
            FROM sync_state s) AS shards
    FROM (SELECT 1) AS one
    LEFT JOIN counters c ON c.key = $1`;

// A reading races the syncer only if a whole batch commits between its Redis and Postgres steps.
const MAX_ATTEMPTS = 3;

/**
 * Reads a counter as persisted + pending without counting a delta twice or missing one while the syncer
 * works. Redis is read first (atomically per shard: dirty delta, flushing delta, the flushing batch's seq),
 * then Postgres (the key's total and each shard's last committed seq). The flushing delta is pending only if
 * its batch is not committed yet; if a batch newer than anything Redis showed has committed in between,
 * the two reads do not describe one moment and the reading is retried.
 */
export function createCounterReader(scripts: Scripts, keyspace: Keyspace, pool: pg.Pool): CounterReader {
  const shards = keyspace.shards.length;

  return async function readCounter(key) {
    for (let attempt = 1; ; attempt++) {
      let pendingByShard: ShardPending[];
      try {
        pendingByShard = await Promise.all(keyspace.shards.map((shard) => scripts.pending(shard, key)));
      } catch (error) {
        throw new ReadFailure("redis", error);
      }
      let row: { value: bigint | null; shards: ShardState[] } | undefined;
      try {
        row = (await pool.query(PERSISTED_SQL, [key])).rows[0];
      } catch (error) {
        throw new ReadFailure("postgres", error);
      }
      const committedSeq = new Map(row?.shards.map((state) => [state.shard, BigInt(state.lastSeq)]));
      let pending = 0n;
      let consistent = true;
      let found = row?.value != null;
      for (const [shard, { dirty, flushing, flushingSeq, lastSeq }] of pendingByShard.entries()) {
        const committed = committedSeq.get(shard) ?? 0n;
        if (dirty !== null) pending += BigInt(dirty);
        if (flushing !== null && flushingSeq !== null && committed < BigInt(flushingSeq))
          pending += BigInt(flushing);
        if (dirty !== null || flushing !== null) found = true;
        // A batch Redis had not even swapped when we read it is already committed: read again.
        if (committed > BigInt(flushingSeq ?? lastSeq ?? "0")) consistent = false;
      }
      if (consistent || attempt === MAX_ATTEMPTS) {
        const syncedThrough = row?.shards.map((state) => Date.parse(state.syncedThrough)) ?? [];
        return {
          key,
          persisted: row?.value ?? 0n,
          pending,
          persistedAsOf: syncedThrough.length === shards ? new Date(Math.min(...syncedThrough)) : null,
          found,
        };
      }
    }
  };
}
