import { setTimeout as sleep } from "node:timers/promises";
import { createLogger } from "../lib/logger.ts";
import { migrate } from "../lib/postgres/migrate.ts";
import { createPool, ensureDatabase } from "../lib/postgres/pool.ts";
import type { RedisClient } from "../lib/redis/client.ts";
import { Keyspace } from "../lib/redis/keyspace.ts";
import { Syncer } from "../syncer/syncer.ts";
import { worstStalenessBeforeCommits } from "./ledger.ts";
import { fillDirtyHash } from "./syncer-throughput.ts";

export interface CurvePoint {
  keysPerCycle: number;
  /** SYNC_CONCURRENCY of the one syncer. */
  concurrency: number;
  shards: number;
  /** Exact, from the ledger: the worst moment just before a commit in the watched window. */
  maxS: number;
  /** The longest one cycle took (every shard swapped and applied). */
  longestCycleS: number;
}

const INTERVAL_MS = 5_000;
const WARMUP_S = 10;
const WATCH_S = 20;

/**
 * One point of the keys-per-cycle → staleness curve: a syncer with `concurrency` (as the service runs it,
 * in this process) while `keysPerCycle` recurring counters land in the dirty hashes every 5 s cycle,
 * nothing else running. Each point gets a database of its own, since the ledger's sequence numbers are
 * per shard, whatever the prefix.
 */
export async function measureCurvePoint(
  redis: RedisClient,
  postgresUrl: (database: string) => string,
  options: { keysPerCycle: number; concurrency: number; shards: number },
): Promise<CurvePoint> {
  const { keysPerCycle, concurrency, shards } = options;
  const url = postgresUrl(`curve_${keysPerCycle}_${concurrency}_${Date.now()}`);
  await ensureDatabase(url);
  const pool = createPool({ connectionString: url, applicationName: "bench-curve", max: concurrency + 1 });
  try {
    await migrate(pool);
    // The steady state: the counters exist, and each cycle updates them.
    await pool.query(
      `INSERT INTO counters (key, value, updated_at)
       SELECT 'curve:' || i, 0, now() FROM generate_series(0, $1::int - 1) AS i`,
      [keysPerCycle],
    );
    await pool.query("VACUUM ANALYZE counters");
    const keyspace = new Keyspace(`curve${keysPerCycle}c${concurrency}`, shards);
    const names = Array.from({ length: keysPerCycle }, (_, i) => `curve:${i}`);
    const byShard = new Map(keyspace.shards.map((shard) => [shard, [] as string[]]));
    for (const name of names) byShard.get(keyspace.shardOf(name))?.push(name);

    const syncer = new Syncer({
      redis,
      pool,
      logger: createLogger({ level: "warn", role: "bench-curve" }),
      keyspace,
      intervalMs: INTERVAL_MS,
      concurrency,
      scanCount: 1_000,
      leaseTtlMs: 3_000,
    });
    let longestCycleMs = 0;
    const watchFrom = new Date(Date.now() + WARMUP_S * 1_000);
    syncer.on("cycle", (report) => {
      if (report.startedAt >= watchFrom) longestCycleMs = Math.max(longestCycleMs, report.durationMs);
    });
    let stop = false;
    const injector = (async () => {
      while (!stop) {
        const began = performance.now();
        for (const [{ dirty }, shardNames] of byShard) {
          await fillDirtyHash(
            redis,
            dirty,
            shardNames,
            shardNames.map(() => "1"),
          );
        }
        await sleep(Math.max(0, INTERVAL_MS - (performance.now() - began)));
      }
    })();
    syncer.start();
    await sleep((WARMUP_S + WATCH_S) * 1_000);
    const watchUntil = new Date();
    stop = true;
    await injector;
    await syncer.stop();
    return {
      keysPerCycle,
      concurrency,
      shards,
      maxS: await worstStalenessBeforeCommits(pool, watchFrom, watchUntil),
      longestCycleS: longestCycleMs / 1000,
    };
  } finally {
    await pool.end();
  }
}
