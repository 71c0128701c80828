import type { Config } from "../lib/config.ts";
import type { Logger } from "../lib/logger.ts";
import { maskedUrl } from "../lib/masked-url.ts";
import { collectProcessMetrics } from "../lib/metrics.ts";
import { createPool } from "../lib/postgres/pool.ts";
import { isPostgresUnreachable } from "../lib/postgres/unreachable.ts";
import { closeRedis, createRedis } from "../lib/redis/client.ts";
import { redisLocation, redisLocationOf, watchRedisConnection } from "../lib/redis/connection.ts";
import { keyspaceOf } from "../lib/redis/keyspace.ts";
import { type RedisMemoryWatch, redisMemoryWatchFor } from "../lib/redis/memory-watch.ts";
import { acknowledgementsFor, replicaWatchFor } from "../lib/redis/replica-watch.ts";
import type { Shutdown } from "../lib/shutdown.ts";
import { Activity } from "./activity/index.ts";
import { WebhookSender } from "./activity/webhook.ts";
import { faultHookFromConfig } from "./faults.ts";
import type { StepHook } from "./flush-context.ts";
import { SyncerMetrics } from "./metrics.ts";
import { Syncer } from "./syncer.ts";

export interface RunningSyncer {
  syncer: Syncer;
  redisMemory: RedisMemoryWatch;
  /** Process metrics included; the entry point serves them (serveSyncerMetrics). */
  metrics: SyncerMetrics;
}

/**
 * How long a process running a syncer may take to shut down: its last cycle flushes what was accepted, and
 * a cycle may take a few intervals when Postgres is slow, so SHUTDOWN_TIMEOUT_MS alone can be too short.
 */
export function syncerShutdownTimeoutMs(config: Config): number {
  return Math.max(config.http.shutdownTimeoutMs, config.sync.intervalMs * 3);
}

/** Starts a syncer process's syncer, with its clients, watches and activity, and registers their cleanups. */
export async function startSyncer(
  config: Config,
  logger: Logger,
  shutdown: Shutdown,
  options: { onStep?: StepHook } = {},
): Promise<RunningSyncer> {
  const keyspace = keyspaceOf(config);
  const redis = createRedis({
    ...redisLocationOf(config.redis),
    name: "tally-syncer",
    // HSCAN pages and the apply wait on nothing slow in Redis, but give them more room than an API write.
    commandTimeoutMs: Math.max(config.redis.commandTimeoutMs, 5_000),
  });
  watchRedisConnection(
    redis,
    logger,
    redisLocation(config.redis),
    "this syncer stands by until it is back; accepted increments wait in Redis",
  );
  shutdown.add("redis", async () => {
    await closeRedis(redis);
  });
  const redisMemory = redisMemoryWatchFor(redis, config, logger);
  redisMemory.start();
  shutdown.add("redis memory watch", () => redisMemory.stop());
  const replicas = replicaWatchFor(redis, config, logger);
  replicas.start();
  shutdown.add("redis replica watch", () => replicas.stop());
  const acknowledgements = acknowledgementsFor(redis, replicas, config, logger);
  // Not awaited: until Redis answers, the lease cannot be claimed and this syncer stands by.
  redis.connect().catch(() => {});

  const pool = createPool({
    connectionString: config.database.url,
    applicationName: "tally-syncer",
    // A connection per shard applied at once, and one for the rest (idle marks, the ledger's pruning).
    max: config.sync.concurrency + 1,
    // Postgres closing idle connections (a restart, an outage) is reported where it matters, by the next
    // query that fails; the pool replaces the connection.
    onError: (error) => logger.debug({ reason: error.message }, "postgres closed an idle connection"),
  });
  shutdown.add("postgres", () => pool.end());
  // Said at start, not only once this syncer leads: with Redis down too, it would never get that far.
  pool.query("SELECT 1").catch((error: unknown) => {
    if (!isPostgresUnreachable(error)) return;
    logger.warn(
      { reason: error instanceof Error ? error.message : String(error) },
      `cannot reach Postgres at DATABASE_URL=${maskedUrl(config.database.url)}: batches wait in Redis until it is back`,
    );
  });

  const { activity: activityConfig } = config;
  const activity = new Activity({
    logger,
    redis,
    shards: keyspace.shards.length,
    intervalMs: config.sync.intervalMs,
    stream:
      activityConfig.streamMaxLen > 0
        ? {
            key: activityConfig.stream ?? keyspace.activityStream,
            maxLen: activityConfig.streamMaxLen,
          }
        : undefined,
    webhook: activityConfig.webhookUrl
      ? new WebhookSender({
          url: activityConfig.webhookUrl,
          timeoutMs: activityConfig.webhookTimeoutMs,
          logger,
        })
      : undefined,
  });
  activity.start();
  // Registered before the syncer, so it runs after the syncer's last cycle (cleanups run in reverse) and
  // before Redis is closed. The webhook gets a second for the last report; a stuck one does not hold the exit.
  shutdown.add("activity", () => activity.stop(1_000));

  const metrics = new SyncerMetrics({
    shards: keyspace.shards.length,
    idempotencyMaxRecords: config.idempotencyMaxRecords,
  });
  collectProcessMetrics(metrics.registry);
  redisMemory.register(metrics.registry);
  replicas.register(metrics.registry);
  acknowledgements.register(metrics.registry);
  const syncer = new Syncer({
    redis,
    acknowledgements,
    pool,
    logger,
    keyspace,
    intervalMs: config.sync.intervalMs,
    concurrency: config.sync.concurrency,
    scanCount: config.sync.scanCount,
    leaseTtlMs: config.sync.leaseTtlMs,
    postgresLocation: `DATABASE_URL=${maskedUrl(config.database.url)}`,
    ledgerRetentionMs: config.sync.ledgerRetentionDays * 86_400_000,
    onStep: options.onStep ?? faultHookFromConfig(config.sync.faultInjection, logger),
  });
  activity.watch(syncer);
  metrics.watch(syncer);
  syncer.start();
  shutdown.add("syncer", () => syncer.stop());
  logger.info({ intervalMs: config.sync.intervalMs, shards: keyspace.shards.length }, "syncer started");
  return { syncer, redisMemory, metrics };
}
