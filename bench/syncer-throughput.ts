import type pg from "pg";
import type { RedisClient } from "../lib/redis/client.ts";
import { Keyspace, type ShardKeys } from "../lib/redis/keyspace.ts";
import { Scripts } from "../lib/redis/scripts.ts";
import { flushShardOnce } from "../syncer/flush-shard.ts";
import { ShardProgress } from "../syncer/shard-progress.ts";

export interface SyncerThroughput {
  keys: number;
  /** The whole syncer batch: swap, HSCAN, sort, ledgered transaction, delete. */
  syncerMs: number;
  /** A bare set-based upsert of the same rows, arrays already in memory: the floor for any syncer. */
  rawUpsertMs: number;
}

const FILL_CHUNK = 10_000;

/**
 * Times one syncer batch of `keys` distinct keys against a raw `unnest` upsert of the same rows, both
 * onto rows that already exist (the steady state: counters are incremented again and again).
 */
export async function measureSyncerThroughput(
  redis: RedisClient,
  pool: pg.Pool,
  prefix: string,
  keys: number,
  scanCount: number,
): Promise<SyncerThroughput> {
  const names = Array.from({ length: keys }, (_, i) => `sync:${keys}:${i}`);
  const deltas = names.map((_, i) => String((i % 997) + 1));
  // The same table as counters, storage parameters (fillfactor) included: LIKE copies all but those.
  const { rows } = await pool.query<{ options: string[] | null }>(
    "SELECT reloptions AS options FROM pg_class WHERE oid = 'counters'::regclass",
  );
  const storage = rows[0]?.options?.length ? ` WITH (${rows[0].options.join(", ")})` : "";
  await pool.query(`CREATE TABLE IF NOT EXISTS raw_counters (LIKE counters INCLUDING ALL)${storage}`);

  // Both tables first get the rows, so the timed runs update existing rows as the syncer usually does.
  await rawUpsert(pool, "raw_counters", names, deltas);
  await rawUpsert(pool, "counters", names, deltas);

  const rawStart = performance.now();
  await rawUpsert(pool, "raw_counters", names, deltas);
  const rawUpsertMs = performance.now() - rawStart;

  const keyspace = new Keyspace(prefix, 1);
  const shard = keyspace.shards[0] as ShardKeys;
  await fillDirtyHash(redis, shard.dirty, names, deltas);
  const syncStart = performance.now();
  const scripts = new Scripts(redis, keyspace);
  const outcome = await flushShardOnce(
    { scripts, pool, scanCount, progress: new ShardProgress(pool) },
    shard,
  );
  const syncerMs = performance.now() - syncStart;
  if (outcome.kind !== "batch" || outcome.keys !== keys) {
    throw new Error(`syncer batch did not cover the ${keys} keys: ${JSON.stringify(outcome, replacer)}`);
  }
  return { keys, syncerMs, rawUpsertMs };
}

async function rawUpsert(pool: pg.Pool, table: string, keys: string[], deltas: string[]): Promise<void> {
  await pool.query(
    `INSERT INTO ${table} AS c (key, value, updated_at)
     SELECT key, delta, now() FROM unnest($1::text[], $2::bigint[]) AS t(key, delta)
     ON CONFLICT (key) DO UPDATE SET value = c.value + excluded.value, updated_at = excluded.updated_at`,
    [keys, deltas],
  );
}

/** Puts `keys` with their deltas in a dirty hash, as many increments would, with few HSETs. */
export async function fillDirtyHash(
  redis: RedisClient,
  dirty: string,
  keys: string[],
  deltas: string[],
): Promise<void> {
  for (let start = 0; start < keys.length; start += FILL_CHUNK) {
    const fields: string[] = [];
    for (let i = start; i < Math.min(keys.length, start + FILL_CHUNK); i++) {
      fields.push(keys[i] as string, deltas[i] as string);
    }
    await redis.hset(dirty, ...fields);
  }
}

/**
 * Adds 1 to each of `keys` in its own shard's dirty hash, as the API would put it: the effect of many
 * clients' increments on the dirty hashes, written with few HSETs.
 */
export async function incrementInShards(
  redis: RedisClient,
  keyspace: Keyspace,
  keys: string[],
): Promise<void> {
  const byShard = new Map(keyspace.shards.map((shard) => [shard, [] as string[]]));
  for (const key of keys) byShard.get(keyspace.shardOf(key))?.push(key);
  for (const [{ dirty }, shardKeys] of byShard) {
    await fillDirtyHash(
      redis,
      dirty,
      shardKeys,
      shardKeys.map(() => "1"),
    );
  }
}

function replacer(_key: string, value: unknown) {
  return typeof value === "bigint" ? value.toString() : value;
}
