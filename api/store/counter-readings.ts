import type pg from "pg";
import type { Keyspace } from "../../lib/redis/keyspace.ts";
import type { ShardPending } from "../../lib/redis/script-replies.ts";
import type { Scripts } from "../../lib/redis/scripts.ts";
import { type KeyInShard, settleCounter } from "./pending-total.ts";

export interface CounterReading {
  key: string;
  /** The total in Postgres. */
  persisted: bigint;
  /**
   * What Redis holds that Postgres does not yet: accepted increments, and a reset's undoing of what came
   * before it. persisted + pending is the counter's total.
   */
  pending: bigint;
  /** Every increment accepted before this instant is in `persisted`; null before the first sync. */
  persistedAsOf: Date | null;
  /** False when nothing counts for the key: never counted, or reset with nothing counted since. */
  found: boolean;
}

/** Reads counters (one reading per key asked, in order); rejects with a ReadFailure when a store cannot answer. */
export type CounterReader = (keys: readonly string[]) => Promise<CounterReading[]>;

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

interface PersistedRows {
  /** Values as text: they may exceed 2^53. */
  rows: { key: string; value: string }[];
  shards: ShardState[];
}

// One round trip: the keys' rows, and every shard's sync position.
const PERSISTED_SQL = `
  SELECT (SELECT coalesce(json_agg(json_build_object('key', c.key, 'value', c.value::text)), '[]')
            FROM counters c WHERE c.key = ANY($1::text[])) AS rows,
         (SELECT coalesce(json_agg(json_build_object(
                   'shard', s.shard, 'lastSeq', s.last_seq::text, 'syncedThrough', s.synced_through)), '[]')
            FROM sync_state s) AS shards`;

// A reading races the syncer only if a whole batch commits between its Redis and Postgres steps.
const MAX_ATTEMPTS = 3;

/**
 * Reads counters as persisted + pending without counting a delta twice or missing one while the syncer
 * works. Redis is read first (atomically per shard, for every key at once: dirty and flushing deltas,
 * resets, the flushing batch's seq), then Postgres (the keys' totals and each shard's last committed seq).
 * The flushing batch is pending only if it is not committed yet; if a batch newer than anything Redis
 * showed has committed in between, the two reads do not describe one moment and the reading is retried.
 * Each key's reading is consistent; keys on different shards are read at moments a few microseconds apart.
 */
export function createCounterReader(scripts: Scripts, keyspace: Keyspace, pool: pg.Pool): CounterReader {
  const shardCount = keyspace.shards.length;

  return async function readCounters(asked) {
    const keys = [...new Set(asked)];
    for (let attempt = 1; ; attempt++) {
      let pendingByShard: ShardPending[];
      try {
        pendingByShard = await Promise.all(keyspace.shards.map((shard) => scripts.pending(shard, keys)));
      } catch (error) {
        throw new ReadFailure("redis", error);
      }
      let persisted: PersistedRows;
      try {
        persisted = (await pool.query<PersistedRows>(PERSISTED_SQL, [keys])).rows[0] ?? {
          rows: [],
          shards: [],
        };
      } catch (error) {
        throw new ReadFailure("postgres", error);
      }
      const committedSeq = new Map(persisted.shards.map((state) => [state.shard, BigInt(state.lastSeq)]));
      // A batch Redis had not even swapped when we read it is already committed: read again.
      const consistent = pendingByShard.every(
        ({ flushingSeq, lastSeq }, shard) =>
          (committedSeq.get(shard) ?? 0n) <= BigInt(flushingSeq ?? lastSeq ?? "0"),
      );
      if (!consistent && attempt < MAX_ATTEMPTS) continue;

      const syncedThrough = persisted.shards.map((state) => Date.parse(state.syncedThrough));
      const persistedAsOf = syncedThrough.length === shardCount ? new Date(Math.min(...syncedThrough)) : null;
      const values = new Map(persisted.rows.map(({ key, value }) => [key, BigInt(value)]));
      const inShard = (shard: number, index: number): KeyInShard => {
        // Promise.all answered one reading per shard, in shard order.
        const pending = pendingByShard[shard] as ShardPending;
        return {
          dirty: pending.dirty[index] ?? null,
          flushing: pending.flushing[index] ?? null,
          dirtyReset: pending.dirtyReset[index] ?? false,
          flushingReset: pending.flushingReset[index] ?? false,
          flushingLive:
            pending.flushingSeq !== null && (committedSeq.get(shard) ?? 0n) < BigInt(pending.flushingSeq),
        };
      };
      const readings = new Map<string, CounterReading>();
      for (const [index, key] of keys.entries()) {
        const home = keyspace.shardOf(key).shard;
        const elsewhere = keyspace.shards
          .filter(({ shard }) => shard !== home)
          .map(({ shard }) => inShard(shard, index));
        const value = values.get(key) ?? null;
        const { total, exists } = settleCounter(value, inShard(home, index), elsewhere);
        const base = value ?? 0n;
        readings.set(key, { key, persisted: base, pending: total - base, persistedAsOf, found: exists });
      }
      // Every key asked is among `keys`, and has its reading.
      return asked.map((key) => readings.get(key) as CounterReading);
    }
  };
}
