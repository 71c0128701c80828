import type { Config } from "../config.ts";
import { FailureStreak } from "../failure-streak.ts";
import type { Logger } from "../logger.ts";
import { maskedUrl } from "../masked-url.ts";
import { closeRedis, connectRedis, createRedis, type RedisClient, type RedisLocation } from "./client.ts";

/** Where the service's Redis is, as the operator configured it (a password masked). */
export function redisLocation(redis: Config["redis"]): string {
  const list = (nodes: { host: string; port: number }[]) =>
    nodes.map(({ host, port }) => `${host}:${port}`).join(",");
  if (redis.clusterNodes) return `REDIS_CLUSTER_NODES=${list(redis.clusterNodes)}`;
  if (redis.sentinels) {
    return `REDIS_SENTINELS=${list(redis.sentinels)} (master ${JSON.stringify(redis.sentinelMaster)})`;
  }
  return `REDIS_URL=${maskedUrl(redis.url)}`;
}

/** The settings createRedis needs to find the service's Redis. */
export function redisLocationOf(redis: Config["redis"]): RedisLocation {
  return {
    url: redis.url,
    clusterNodes: redis.clusterNodes,
    sentinels: redis.sentinels,
    sentinelMaster: redis.sentinelMaster,
  };
}

/**
 * Logs a client's connection trouble the way an operator wants it: one line when Redis cannot be reached
 * (with where it was looked for and what that means for this process), a reminder at most every 30 s, and
 * one line when it is back. ioredis reports every failed reconnect as an "error" event: without this, a
 * line and a stack per attempt.
 */
export function watchRedisConnection(
  redis: RedisClient,
  logger: Logger,
  where: string,
  consequence: string,
): void {
  const streak = new FailureStreak(logger, `cannot reach Redis at ${where}: ${consequence}`);
  redis.on("error", (error: unknown) => streak.failed(error));
  redis.on("ready", () => streak.succeeded());
}

/**
 * For `npm start`, which needs Postgres before it starts anything: says at once when Redis cannot be reached
 * either, instead of letting the operator find out only after Postgres is fixed.
 */
export async function warnIfRedisUnreachable(config: Config, logger: Logger): Promise<void> {
  const probe = createRedis({
    ...redisLocationOf(config.redis),
    name: "tally-probe",
    commandTimeoutMs: config.redis.commandTimeoutMs,
  });
  // The connection's own error (refused, unknown host) says more than the wait's timeout.
  let connectionError: unknown;
  probe.on("error", (error: unknown) => {
    connectionError = error;
  });
  try {
    await connectRedis(probe, 1_000);
  } catch (error) {
    const reason = connectionError ?? error;
    logger.warn(
      { reason: reason instanceof Error ? reason.message : String(reason) },
      `cannot reach Redis at ${redisLocation(config.redis)}: the API will answer 503 and the syncer wait until it is back`,
    );
  } finally {
    await closeRedis(probe);
  }
}
