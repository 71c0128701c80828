import type { Config } from "../lib/config.ts";
import type { Logger } from "../lib/logger.ts";
import { createPool } from "../lib/postgres/pool.ts";
import { connectRedis, createRedis } from "../lib/redis/client.ts";
import type { Shutdown } from "../lib/shutdown.ts";
import { faultHookFromConfig } from "./faults.ts";
import type { StepHook } from "./flush-shard.ts";
import { Syncer } from "./syncer.ts";

/** Starts a syncer (leader or standby) and registers its drain-then-close cleanups. */
export async function startSyncer(
  config: Config,
  logger: Logger,
  shutdown: Shutdown,
  options: { onStep?: StepHook } = {},
): Promise<Syncer> {
  const redis = createRedis({
    url: config.redis.url,
    clusterNodes: config.redis.clusterNodes,
    name: "tally-syncer",
    // HSCAN pages and the apply wait on nothing slow in Redis, but give them more room than an API write.
    commandTimeoutMs: Math.max(config.redis.commandTimeoutMs, 5_000),
  });
  redis.on("error", (error) => logger.warn({ err: error }, "redis connection error"));
  shutdown.add("redis", async () => {
    await redis.quit().catch(() => redis.disconnect());
  });
  await connectRedis(redis, 30_000).catch((error) =>
    logger.warn({ err: error }, "redis not ready yet; retrying"),
  );

  const pool = createPool({
    connectionString: config.database.url,
    applicationName: "tally-syncer",
    max: 2,
    onError: (error) => logger.warn({ err: error }, "postgres idle client error"),
  });
  shutdown.add("postgres", () => pool.end());

  const syncer = new Syncer({
    redis,
    pool,
    logger,
    keyPrefix: config.redis.keyPrefix,
    shards: config.sync.shards,
    intervalMs: config.sync.intervalMs,
    scanCount: config.sync.scanCount,
    leaseTtlMs: config.sync.leaseTtlMs,
    onStep: options.onStep ?? faultHookFromConfig(config.sync.faultInjection, logger),
  });
  syncer.start();
  shutdown.add("syncer", () => syncer.stop());
  logger.info({ intervalMs: config.sync.intervalMs, shards: config.sync.shards }, "syncer started");
  return syncer;
}
