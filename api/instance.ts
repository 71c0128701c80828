import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { createAdaptorServer } from "@hono/node-server";
import type pg from "pg";
import type { Registry } from "prom-client";
import { RateLimiterRedis } from "rate-limiter-flexible";
import type { Config } from "../lib/config.ts";
import { listen } from "../lib/listen.ts";
import type { Logger } from "../lib/logger.ts";
import { collectProcessMetrics } from "../lib/metrics.ts";
import { createPool } from "../lib/postgres/pool.ts";
import { closeRedis, createRedis, type RedisClient } from "../lib/redis/client.ts";
import { redisLocation, redisLocationOf, watchRedisConnection } from "../lib/redis/connection.ts";
import { watchHashEncoding } from "../lib/redis/hash-encoding.ts";
import { keyspaceOf } from "../lib/redis/keyspace.ts";
import { type RedisMemoryWatch, redisMemoryWatchFor } from "../lib/redis/memory-watch.ts";
import { acknowledgementsFor, type ReplicaWatch, replicaWatchFor } from "../lib/redis/replica-watch.ts";
import { Scripts } from "../lib/redis/scripts.ts";
import type { Shutdown } from "../lib/shutdown.ts";
import { newApp } from "./app.ts";
import { ApiMetrics } from "./metrics.ts";
import { cacheVerifiedTokens } from "./middleware/auth/token-cache.ts";
import { createTokenVerifier } from "./middleware/auth/verifier.ts";
import { coalesceConsumes } from "./middleware/rate-limit/coalesce.ts";
import { createCounterLister } from "./store/counter-listing.ts";
import { createCounterReader } from "./store/counter-readings.ts";
import { createIncrementStore } from "./store/increments.ts";
import { createCounterResetter } from "./store/resets.ts";

// Longer than the idle timeout of common load balancers (nginx 60 s upstream keepalive_timeout, AWS ALB
// 60 s), so the balancer, not the API, closes idle connections and never races a request onto a closing one.
const KEEP_ALIVE_TIMEOUT_MS = 65_000;
const TIMEOUT_CHECK_INTERVAL_MS = 1_000;

export interface ApiInstance {
  app: ReturnType<typeof newApp>;
  redis: RedisClient;
  /**
   * The increments' own connection: a WAIT for the replicas holds a connection until they answer, and must
   * not hold up reads, the rate limiter or health checks meanwhile.
   */
  writes: RedisClient;
  /** Not started: startApiInstance starts it (tests that build an instance do not need it). */
  redisMemory: RedisMemoryWatch;
  /** Not started either. */
  replicas: ReplicaWatch;
  pool: pg.Pool;
  metrics: ApiMetrics;
  /** From now on /readyz answers 503, so load balancers stop sending new requests. */
  startDraining(): void;
}

/**
 * The API in one process (an API node runs one, or one per worker, see node.ts): its app and clients, built
 * without listening. `startApiInstance` serves it; tests call `app.request()`.
 */
export function createApiInstance(config: Config, logger: Logger): ApiInstance {
  const redis = createRedis({
    ...redisLocationOf(config.redis),
    name: "tally-api",
    commandTimeoutMs: config.redis.commandTimeoutMs,
  });
  const writes = createRedis({
    ...redisLocationOf(config.redis),
    name: "tally-api-writes",
    commandTimeoutMs: config.redis.commandTimeoutMs,
  });
  // Both reach the same Redis: the first one's watch says when it cannot be reached.
  writes.on("error", () => {});
  watchRedisConnection(
    redis,
    logger,
    redisLocation(config.redis),
    "writes and reads answer 503 until it is back",
  );
  redis.on("ready", () => logger.info("redis ready"));

  const pool = createPool({
    connectionString: config.database.url,
    applicationName: "tally-api",
    max: config.database.poolSize,
    statementTimeoutMs: 5_000,
    // Postgres closing idle connections (a restart, an outage) is reported where it matters, by the next
    // query that fails; the pool replaces the connection.
    onError: (error) => logger.debug({ reason: error.message }, "postgres closed an idle connection"),
  });

  const redisMemory = redisMemoryWatchFor(redis, config, logger);
  const replicas = replicaWatchFor(writes, config, logger);

  const keyspace = keyspaceOf(config);
  const scripts = new Scripts(redis, keyspace, acknowledgementsFor(writes, replicas, config, logger));
  const idempotency = {
    idempotencyTtlSeconds: config.idempotencyTtlSeconds,
    idempotencyMaxRecords: config.idempotencyMaxRecords,
  };
  const increment = createIncrementStore(scripts, keyspace, idempotency);
  let draining = false;
  const metrics = new ApiMetrics();
  const readCounter = createCounterReader(scripts, keyspace, pool);
  const app = newApp({
    logger,
    metrics,
    verifier: config.auth.mode === "disabled" ? null : cacheVerifiedTokens(createTokenVerifier(config.auth)),
    rateLimiter:
      config.rateLimit &&
      coalesceConsumes(
        new RateLimiterRedis({
          storeClient: redis,
          keyPrefix: keyspace.rateLimitPrefix,
          points: config.rateLimit.points,
          duration: config.rateLimit.durationSeconds,
          rejectIfRedisNotReady: true,
        }),
      ),
    httpMetrics: config.metrics.perRequest,
    increment,
    readCounter,
    listCounters: createCounterLister(scripts, keyspace, pool, readCounter),
    resetCounter: createCounterResetter(scripts, keyspace, idempotency),
    health: { redis: [redis, writes], redisMemory, isDraining: () => draining },
    maxKeyLength: config.maxKeyLength,
    maxBatchSize: config.maxBatchSize,
    bodyLimitBytes: config.http.bodyLimitBytes,
  });
  return {
    app,
    redis,
    writes,
    redisMemory,
    replicas,
    pool,
    metrics,
    startDraining: () => {
      draining = true;
    },
  };
}

export interface RunningApi {
  /** The address the server listens on, e.g. http://127.0.0.1:3333. */
  url: string;
  /** The instance's metrics, process metrics included; the entry point serves them (lib/metrics.ts). */
  metrics: Registry;
}

/**
 * Starts an API instance and registers its cleanups: on shutdown it reports not-ready, stops accepting
 * connections, lets in-flight requests finish, then closes Redis and Postgres.
 */
export async function startApiInstance(
  config: Config,
  logger: Logger,
  shutdown: Shutdown,
): Promise<RunningApi> {
  if (config.auth.mode === "hs256" && config.auth.isDevelopmentSecret) {
    logger.warn("JWT_SECRET is not set: using the built-in development secret; never do this in production");
  }
  if (config.auth.mode === "disabled")
    logger.warn("AUTH_DISABLED=true: every request is accepted anonymously");

  const instance = createApiInstance(config, logger);
  collectProcessMetrics(instance.metrics.registry);
  instance.redisMemory.register(instance.metrics.registry);
  instance.replicas.register(instance.metrics.registry);
  shutdown.add("redis", async () => {
    await Promise.all([instance.redis, instance.writes].map(closeRedis));
  });
  instance.redisMemory.start();
  shutdown.add("redis memory watch", () => instance.redisMemory.stop());
  instance.replicas.start();
  shutdown.add("redis replica watch", () => instance.replicas.stop());
  shutdown.add("redis hash encoding watch", watchHashEncoding(instance.redis, logger));
  shutdown.add("postgres", () => instance.pool.end());
  // Not awaited: the instance serves (with 503s and a failing /readyz) until Redis is reachable.
  instance.redis.connect().catch(() => {});
  instance.writes.connect().catch(() => {});

  const server = createAdaptorServer({
    fetch: instance.app.fetch,
    serverOptions: {
      keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
      // A client that holds a request open (slowloris) is cut off after these, also when the API is exposed
      // without a proxy; Node's own defaults hold a request for five minutes.
      headersTimeout: config.http.headersTimeoutMs,
      requestTimeout: config.http.requestTimeoutMs,
      // How often Node looks for requests past those timeouts (its default is 30 s, longer than both).
      connectionsCheckingInterval: Math.min(config.http.headersTimeoutMs, TIMEOUT_CHECK_INTERVAL_MS),
    },
  }) as Server;
  await listen(server, config.http.port, config.http.host, "PORT");
  shutdown.add("http server", async () => {
    // Report not-ready (and answer with Connection: close) for a while before refusing connections, so a
    // load balancer's health check sees the node leave instead of meeting refused connections, and clients
    // move their connections to another node. The header is set here, before the app runs, rather than by a
    // middleware that every request would pass through for the few seconds of a node's life it matters.
    instance.startDraining();
    server.prependListener("request", (_request, response) => response.setHeader("Connection", "close"));
    await sleep(config.http.drainDelayMs);
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    // close() waits for every connection to end. A keep-alive connection that was busy a moment ago turns
    // idle only after its response, and a client may keep it for the whole keep-alive timeout, so sweep
    // idle connections until the last in-flight request has been answered.
    server.closeIdleConnections();
    const sweep = setInterval(() => server.closeIdleConnections(), 50);
    await closed;
    clearInterval(sweep);
  });

  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  logger.info({ url }, "api listening");
  return { url, metrics: instance.metrics.registry };
}
