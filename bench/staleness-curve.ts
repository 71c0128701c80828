import { setTimeout as sleep } from "node:timers/promises";
import { createLogger } from "../lib/logger.ts";
import { migrate } from "../lib/postgres/migrate.ts";
import { createPool, ensureDatabase } from "../lib/postgres/pool.ts";
import type { RedisClient } from "../lib/redis/client.ts";
import { Keyspace } from "../lib/redis/keyspace.ts";
import { Syncer } from "../syncer/syncer.ts";
import { worstStalenessBeforeCommits } from "./ledger.ts";
import { incrementInShards } from "./syncer-throughput.ts";

export interface CurvePoint {
  keysPerCycle: number;
  /** Syncers sharing the shards, each with its own connections as a process would have. */
  syncers: number;
  /** SYNC_CONCURRENCY of each syncer. */
  concurrency: number;
  shards: number;
  /** Exact, from the ledger: the worst moment just before a commit in the watched window. */
  maxS: number;
  /** The longest one syncer's cycle took (every shard it holds swapped and applied). */
  longestCycleS: number;
}

const INTERVAL_MS = 5_000;
const WARMUP_S = 10;
const WATCH_S = 20;

/**
 * One point of the keys-per-cycle → staleness curve: `syncers` syncers sharing the shards, each with
 * `concurrency` (as the service runs them, here in this process, each with its own Redis and Postgres
 * connections), while `keysPerCycle` recurring counters land in the dirty hashes every 5 s cycle, nothing
 * else running. Each point gets a database of its own, since the ledger's sequence numbers are per shard,
 * whatever the prefix.
 */
export async function measureCurvePoint(
  redis: RedisClient,
  openRedis: () => Promise<RedisClient>,
  postgresUrl: (database: string) => string,
  options: { keysPerCycle: number; syncers: number; concurrency: number; shards: number },
): Promise<CurvePoint> {
  const { keysPerCycle, syncers: syncerCount, concurrency, shards } = options;
  const url = postgresUrl(`curve_${keysPerCycle}_${syncerCount}_${concurrency}_${Date.now()}`);
  await ensureDatabase(url);
  const pool = createPool({ connectionString: url, applicationName: "bench-curve", max: 1 });
  const opened: { redis: RedisClient; pool: ReturnType<typeof createPool> }[] = [];
  try {
    await migrate(pool);
    // The steady state: the counters exist, and each cycle updates them.
    await pool.query(
      `INSERT INTO counters (key, value, updated_at)
       SELECT 'curve:' || i, 0, now() FROM generate_series(0, $1::int - 1) AS i`,
      [keysPerCycle],
    );
    await pool.query("VACUUM ANALYZE counters");
    const keyspace = new Keyspace(`curve${keysPerCycle}s${syncerCount}c${concurrency}`, shards);
    const names = Array.from({ length: keysPerCycle }, (_, i) => `curve:${i}`);

    let longestCycleMs = 0;
    const watchFrom = new Date(Date.now() + WARMUP_S * 1_000);
    const syncers: Syncer[] = [];
    for (let i = 0; i < syncerCount; i++) {
      const own = {
        redis: await openRedis(),
        pool: createPool({ connectionString: url, applicationName: "bench-curve", max: concurrency + 1 }),
      };
      opened.push(own);
      const syncer = new Syncer({
        ...own,
        logger: createLogger({ level: "warn", role: "bench-curve" }),
        keyspace,
        intervalMs: INTERVAL_MS,
        concurrency,
        scanCount: 1_000,
        leaseTtlMs: 3_000,
      });
      syncer.on("cycle", (report) => {
        if (report.startedAt >= watchFrom) longestCycleMs = Math.max(longestCycleMs, report.durationMs);
      });
      syncers.push(syncer);
    }
    let stop = false;
    const injector = (async () => {
      while (!stop) {
        const began = performance.now();
        await incrementInShards(redis, keyspace, names);
        await sleep(Math.max(0, INTERVAL_MS - (performance.now() - began)));
      }
    })();
    for (const syncer of syncers) syncer.start();
    await sleep((WARMUP_S + WATCH_S) * 1_000);
    const watchUntil = new Date();
    stop = true;
    await injector;
    await Promise.all(syncers.map((syncer) => syncer.stop()));
    return {
      keysPerCycle,
      syncers: syncerCount,
      concurrency,
      shards,
      maxS: await worstStalenessBeforeCommits(pool, watchFrom, watchUntil),
      longestCycleS: longestCycleMs / 1000,
    };
  } finally {
    await pool.end();
    for (const own of opened) {
      own.redis.disconnect();
      await own.pool.end();
    }
  }
}
