import type pg from "pg";
import { afterAll, beforeAll, beforeEach } from "vitest";
import type { Logger } from "../../lib/logger.ts";
import { createPool } from "../../lib/postgres/pool.ts";
import { connectRedis, createRedis, type RedisClient } from "../../lib/redis/client.ts";
import { allShardKeys, Keyspace, type ShardKeys, shardKeys } from "../../lib/redis/keyspace.ts";
import { LUA } from "../../lib/redis/scripts.ts";
import type { StepHook } from "../../syncer/flush-context.ts";
import { Syncer } from "../../syncer/syncer.ts";
import { freshDatabase, randomPrefix, sharedRedisUrl, waitFor } from "../harness/fixtures.ts";
import { silentLogger } from "./logger.ts";

export { shardKeys, silentLogger };

/** A client with tally's Lua scripts, built the way the syncer builds its own. */
export async function openRedis(url: string, name = "test-syncer"): Promise<RedisClient> {
  const redis = createRedis({ url, name, commandTimeoutMs: 5_000 });
  // Some tests stop servers under a live client; failures must surface through rejected commands, not as
  // an unhandled "error" event that fails the whole file.
  redis.on("error", () => {});
  await connectRedis(redis);
  return redis;
}

export function openPool(connectionString: string, max = 4): pg.Pool {
  return createPool({ connectionString, applicationName: "test-syncer", max });
}

export interface TestSyncerOptions {
  redis: RedisClient;
  pool: pg.Pool;
  prefix: string;
  shards?: number;
  intervalMs?: number;
  leaseTtlMs?: number;
  scanCount?: number;
  /** SYNC_CONCURRENCY; its default, 2, unless a test asks otherwise. */
  concurrency?: number;
  onStep?: StepHook;
  ledgerRetentionMs?: number;
  /** Silent unless a test reads the lines. */
  logger?: Logger;
}

export function createSyncer(options: TestSyncerOptions): Syncer {
  return new Syncer({
    redis: options.redis,
    pool: options.pool,
    logger: options.logger ?? silentLogger,
    keyspace: new Keyspace(options.prefix, options.shards ?? 1),
    intervalMs: options.intervalMs ?? 100,
    leaseTtlMs: options.leaseTtlMs ?? 1_000,
    scanCount: options.scanCount ?? 1_000,
    concurrency: options.concurrency ?? 2,
    onStep: options.onStep,
    ledgerRetentionMs: options.ledgerRetentionMs,
  });
}

/** Swaps the shard's dirty hash aside as batch `batchId`, as a syncer that then died would have. */
export async function swapAside(
  redis: RedisClient,
  keys: ShardKeys,
  batchId: string,
  swappedAtMs: number,
): Promise<void> {
  await LUA.swap.run(
    redis,
    [keys.dirty, keys.flushing, keys.flushingMeta, keys.seq, keys.resets, keys.flushingResets],
    [batchId, swappedAtMs, 1],
  );
}

/**
 * HINCRBYs deltas into one shard's dirty hash, the way the API does. Deltas go over the wire as decimal
 * text, so values beyond 2^53 stay exact.
 */
export async function addDeltas(
  redis: RedisClient,
  prefix: string,
  deltas: Iterable<readonly [key: string, delta: bigint | number]>,
  shard = 0,
): Promise<void> {
  const { dirty } = shardKeys(prefix, shard);
  const pipeline = redis.pipeline();
  for (const [key, delta] of deltas) pipeline.hincrby(dirty, key, delta.toString());
  const results = (await pipeline.exec()) ?? [];
  for (const [error] of results) if (error) throw error;
}

/** Adds `delta` to the expected total of `key` (the JS-side model the tests compare Postgres against). */
export function expectDelta(expected: Map<string, bigint>, key: string, delta: bigint | number): void {
  expected.set(key, (expected.get(key) ?? 0n) + BigInt(delta));
}

/**
 * The totals without the keys that net to zero. Such a key creates no row when it cancels out within one
 * batch, but keeps a row at 0 when it cancels out across batches, so comparisons leave zeros out.
 */
export function nonZero(expected: Map<string, bigint>): Map<string, bigint> {
  return new Map([...expected].filter(([, value]) => value !== 0n));
}

/** Every `counters` row; the pool parses int8 as BigInt. */
export async function readCounters(pool: pg.Pool): Promise<Map<string, bigint>> {
  const { rows } = await pool.query<{ key: string; value: bigint }>("SELECT key, value FROM counters");
  return new Map(rows.map((row) => [row.key, row.value]));
}

export interface LedgerRow {
  batch_id: string;
  shard: number;
  seq: bigint;
  swapped_at: Date;
  key_count: number;
  /** numeric: pg returns it as text. */
  delta_sum: string;
  reset_count: number;
}

export async function readLedger(pool: pg.Pool): Promise<LedgerRow[]> {
  const { rows } = await pool.query<LedgerRow>(
    "SELECT batch_id, shard, seq, swapped_at, key_count, delta_sum, reset_count FROM sync_batches ORDER BY shard, seq",
  );
  return rows;
}

/** Empties every table the syncer writes, so tests in one file (one database) start from nothing. */
export async function resetTables(pool: pg.Pool): Promise<void> {
  await pool.query("TRUNCATE counters, sync_batches, sync_state, quarantined_deltas");
}

/** True when no shard holds a dirty or flushing hash: everything accepted is in Postgres. */
export async function isDrained(redis: RedisClient, prefix: string, shards = 1): Promise<boolean> {
  const keys = allShardKeys(prefix, shards).flatMap((shard) => [
    shard.dirty,
    shard.flushing,
    shard.resets,
    shard.flushingResets,
  ]);
  return (await redis.exists(...keys)) === 0;
}

/**
 * Runs cycles until Redis holds nothing for the prefix. A cycle may fail while a server recovers; only a
 * clean cycle after which both hashes are gone counts.
 */
export async function drain(syncer: Syncer, redis: RedisClient, prefix: string, shards = 1): Promise<void> {
  await waitFor(
    async () => {
      const report = await syncer.runCycle();
      return report.failures.length === 0 && (await isDrained(redis, prefix, shards));
    },
    { timeoutMs: 15_000, intervalMs: 10, message: `prefix ${prefix} did not drain` },
  );
}

/** Deletes every key of a prefix on the shared Redis, so test files leave nothing behind. */
export async function deletePrefix(redis: RedisClient, prefix: string): Promise<void> {
  // Shard keys carry the hash tag `{prefix:N}`; the lease and the rest start with `prefix:`.
  for (const pattern of [`{${prefix}:*`, `${prefix}:*`]) {
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1_000);
      if (keys.length > 0) await redis.del(...keys);
      cursor = next;
    } while (cursor !== "0");
  }
}

/** Integer in [min, max], uniform enough for test data. */
export function randomInt(min: number, max: number): number {
  return min + Math.floor(Math.random() * (max - min + 1));
}

export interface SyncerEnv {
  redisUrl: string;
  databaseUrl: string;
  /** The test's own client, for writing deltas and inspecting keys. */
  redis: RedisClient;
  /** The test's own pool, for inspecting and resetting tables. */
  pool: pg.Pool;
  /** Another client, as a separate syncer process would have one; closed by close(). */
  openRedis(): Promise<RedisClient>;
  /** Another pool, as a separate syncer process would have one; closed by close(). */
  openPool(): pg.Pool;
  /** A fresh key prefix (one per test keeps tests apart); its keys are deleted by close(). */
  newPrefix(): string;
  close(): Promise<void>;
}

/**
 * Clients for one test file: by default the shared Redis and a fresh database on the shared Postgres,
 * dropped by close(). A file with private servers passes their URLs (its database is then its own to drop).
 */
export async function openSyncerEnv(
  options: { redisUrl?: string; databaseUrl?: string } = {},
): Promise<SyncerEnv> {
  const redisUrl = options.redisUrl ?? sharedRedisUrl();
  const { url: databaseUrl, drop } =
    options.databaseUrl === undefined
      ? await freshDatabase()
      : { url: options.databaseUrl, drop: async () => {} };
  const clients: RedisClient[] = [];
  const pools: pg.Pool[] = [];
  const prefixes: string[] = [];
  const env: SyncerEnv = {
    redisUrl,
    databaseUrl,
    redis: await openRedis(redisUrl, "test"),
    pool: openPool(databaseUrl),
    openRedis: async () => {
      const redis = await openRedis(redisUrl);
      clients.push(redis);
      return redis;
    },
    openPool: () => {
      const pool = openPool(databaseUrl);
      pools.push(pool);
      return pool;
    },
    newPrefix: () => {
      const prefix = randomPrefix();
      prefixes.push(prefix);
      return prefix;
    },
    close: async () => {
      for (const redis of clients) redis.disconnect();
      await Promise.all(pools.filter((pool) => !pool.ending).map((pool) => pool.end()));
      for (const prefix of prefixes) await deletePrefix(env.redis, prefix).catch(() => {});
      env.redis.disconnect();
      await env.pool.end();
      await drop();
    },
  };
  return env;
}

/**
 * One SyncerEnv for the calling test file on the shared servers, opened before its tests, closed after
 * them, with the tables emptied before each test. The returned object reads through to that env, so it can
 * be a module-level const.
 */
export function useSyncerEnv(): SyncerEnv {
  let current: SyncerEnv | undefined;
  const env = () => {
    if (current === undefined) throw new Error("useSyncerEnv: the env exists only inside the file's tests");
    return current;
  };
  beforeAll(async () => {
    current = await openSyncerEnv();
  });
  afterAll(async () => {
    await current?.close();
  });
  beforeEach(async () => {
    await resetTables(env().pool);
  });
  return {
    get redisUrl() {
      return env().redisUrl;
    },
    get databaseUrl() {
      return env().databaseUrl;
    },
    get redis() {
      return env().redis;
    },
    get pool() {
      return env().pool;
    },
    openRedis: () => env().openRedis(),
    openPool: () => env().openPool(),
    newPrefix: () => env().newPrefix(),
    close: () => env().close(),
  };
}
