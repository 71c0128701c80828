import type pg from "pg";
import type { Keyspace } from "../../lib/redis/keyspace.ts";
import type { Scripts } from "../../lib/redis/scripts.ts";
import { type CounterReader, type CounterReading, ReadFailure } from "./counter-readings.ts";
import { compareKeys, prefixEnd } from "./key-order.ts";

export interface ListingQuery {
  /** List the keys that start with it; "" lists every key. */
  prefix: string;
  /** Start after this key (the last key of the page before); null for the first page. */
  after: string | null;
  /** At most this many keys are looked at for the page. */
  limit: number;
}

export interface CounterPage {
  /** In key order; a key reset since its last increment is left out, so a page may be short. */
  counters: CounterReading[];
  /** Where the next page starts after; null when this page is the last. */
  lastKey: string | null;
}

/** Lists counters in key order; rejects with a ReadFailure when a store cannot answer. */
export type CounterLister = (query: ListingQuery) => Promise<CounterPage>;

/**
 * Lists the counters under a prefix, in key order (Unicode code points, as Postgres' "C" collation orders
 * them), a page at a time. A page's keys are the first `limit` after the cursor among Postgres' rows (a range
 * on the primary key: `limit + 1` rows, whatever the table's size) and the keys only Redis holds so far (every
 * shard's dirty and flushing hash, which hold a sync interval's keys). Their values are then read as POST
 * /read reads them.
 */
export function createCounterLister(
  scripts: Scripts,
  keyspace: Keyspace,
  pool: pg.Pool,
  readCounters: CounterReader,
): CounterLister {
  const persistedKeys = async (query: ListingQuery): Promise<string[]> => {
    try {
      const { rows } = await pool.query<{ key: string }>(persistedKeysQuery(query));
      return rows.map((row) => row.key);
    } catch (error) {
      throw new ReadFailure("postgres", error);
    }
  };

  // The smallest `limit + 1` keys after the cursor that Redis holds, kept bounded while the hashes are scanned.
  const pendingKeys = async (query: ListingQuery): Promise<string[]> => {
    const wanted = query.limit + 1;
    let kept: string[] = [];
    try {
      for (const shard of keyspace.shards) {
        for await (const keys of scripts.pendingKeys(shard, query.prefix)) {
          for (const key of keys)
            if (query.after === null || compareKeys(key, query.after) > 0) kept.push(key);
          if (kept.length > wanted * 4) kept = smallest(kept, wanted);
        }
      }
    } catch (error) {
      throw new ReadFailure("redis", error);
    }
    return smallest(kept, wanted);
  };

  return async function listCounters(query) {
    const [persisted, pending] = await Promise.all([persistedKeys(query), pendingKeys(query)]);
    const candidates = smallest([...persisted, ...pending], query.limit + 1);
    const pageKeys = candidates.slice(0, query.limit);
    const readings = pageKeys.length === 0 ? [] : await readCounters(pageKeys);
    return {
      counters: readings.filter((reading) => reading.found),
      lastKey: candidates.length > query.limit ? (pageKeys.at(-1) ?? null) : null,
    };
  };
}

/**
 * The first `limit + 1` keys of the page in Postgres: a range on the primary key, bounded on both sides so
 * that the index scan stops at the prefix's end, whatever the table's size.
 */
export function persistedKeysQuery(query: ListingQuery): pg.QueryConfig {
  const values: (string | number)[] = [query.limit + 1];
  const conditions = [
    query.after === null ? `key >= $${values.push(query.prefix)}` : `key > $${values.push(query.after)}`,
  ];
  const end = prefixEnd(query.prefix);
  if (end !== null) conditions.push(`key < $${values.push(end)}`);
  return { text: `SELECT key FROM counters WHERE ${conditions.join(" AND ")} ORDER BY key LIMIT $1`, values };
}

/** The `count` smallest distinct keys, in key order. */
function smallest(keys: string[], count: number): string[] {
  return [...new Set(keys)].sort(compareKeys).slice(0, count);
}
