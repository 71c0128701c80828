import * as v from "valibot";
import { EX_CONFIG } from "./exit.ts";
import { SETTINGS, type Settings } from "./settings.ts";

/**
 * The configuration, parsed once at start-up from the environment (lib/settings.ts states every variable)
 * and shaped for the code. A bad value stops the process with a message that names the variable, instead
 * of surfacing later as a confusing runtime error.
 */

const DEV_JWT_SECRET = "tally-development-secret-do-not-use-in-production";

interface TokenRules {
  issuer?: string;
  audience?: string;
  /** Longest a token may be valid for (exp minus iat, or minus now without iat), seconds; none when unset. */
  maxLifetimeSeconds?: number;
}

export type AuthConfig =
  | ({ mode: "hs256"; secret: string; isDevelopmentSecret: boolean } & TokenRules)
  | ({ mode: "jwks"; jwksUrl: string } & TokenRules)
  | { mode: "disabled" };

/** The configuration, as parseConfig shapes the settings. */
export type Config = ReturnType<typeof configFrom>;

export class ConfigError extends Error {
  override name = "ConfigError";
}

function resolveAuth(env: Settings): AuthConfig {
  const claims = {
    issuer: env.JWT_ISSUER,
    audience: env.JWT_AUDIENCE,
    maxLifetimeSeconds: env.JWT_MAX_LIFETIME_S,
  };
  if (env.AUTH_DISABLED) return { mode: "disabled" };
  if (env.JWT_SECRET && env.JWT_JWKS_URL) {
    throw new ConfigError("set either JWT_SECRET (HS256) or JWT_JWKS_URL (RS256/ES256), not both");
  }
  if (env.JWT_JWKS_URL) return { mode: "jwks", jwksUrl: env.JWT_JWKS_URL, ...claims };
  if (env.JWT_SECRET) return { mode: "hs256", secret: env.JWT_SECRET, ...claims, isDevelopmentSecret: false };
  if (env.NODE_ENV === "production") {
    throw new ConfigError(
      "no token verification configured: set JWT_SECRET or JWT_JWKS_URL (or AUTH_DISABLED=true to accept anonymous requests)",
    );
  }
  // Outside production, a fixed secret shared with `npm run token` makes `npm start` work out of the box.
  return { mode: "hs256", secret: DEV_JWT_SECRET, ...claims, isDevelopmentSecret: true };
}

/** Redis settings that are each valid but do not fit together. */
function checkRedisSettings(env: Settings): void {
  if (env.REDIS_CLUSTER_NODES && env.REDIS_SENTINELS) {
    throw new ConfigError("set either REDIS_CLUSTER_NODES or REDIS_SENTINELS, not both");
  }
  // The client gives up on a command after REDIS_COMMAND_TIMEOUT_MS; a WAIT that may last as long would be
  // reported as Redis not answering instead of as replicas that did not confirm.
  if (env.REDIS_WAIT_TIMEOUT_MS !== undefined && env.REDIS_WAIT_TIMEOUT_MS >= env.REDIS_COMMAND_TIMEOUT_MS) {
    throw new ConfigError(
      `REDIS_WAIT_TIMEOUT_MS (${env.REDIS_WAIT_TIMEOUT_MS}) must be below REDIS_COMMAND_TIMEOUT_MS (${env.REDIS_COMMAND_TIMEOUT_MS})`,
    );
  }
}

export function parseConfig(source: Record<string, string | undefined> = process.env): Config {
  // Treat VAR= (empty) as unset, the way shells and compose files commonly leave it.
  const present = Object.fromEntries(Object.entries(source).filter(([, value]) => value !== ""));
  const result = v.safeParse(SETTINGS, present, { abortPipeEarly: true });
  if (!result.success) {
    const lines = result.issues.map((issue) => {
      const name = v.getDotPath(issue) ?? "environment";
      return `  ${name}: ${issue.message} (got ${JSON.stringify(issue.input)})`;
    });
    throw new ConfigError(`invalid configuration:\n${lines.join("\n")}`);
  }
  const env = result.output;
  checkRedisSettings(env);
  return configFrom(env, present.METRICS_PORT !== undefined);
}

/** The settings shaped as the code uses them: by concern, with the units and defaults derived once. */
function configFrom(env: Settings, metricsPortSet: boolean) {
  return {
    env: env.NODE_ENV,
    http: {
      host: env.HOST,
      port: env.PORT,
      bodyLimitBytes: env.BODY_LIMIT_BYTES,
      shutdownTimeoutMs: env.SHUTDOWN_TIMEOUT_MS,
      /** How long a draining API node keeps serving (and failing /readyz) before it stops listening. */
      drainDelayMs: env.SHUTDOWN_DRAIN_DELAY_MS,
      /** API processes (node:cluster workers) sharing the port. */
      workers: env.API_WORKERS,
      headersTimeoutMs: env.HTTP_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: env.HTTP_REQUEST_TIMEOUT_MS,
    },
    logLevel: env.LOG_LEVEL,
    /** Period of the "process stats" log line (memory, event-loop delay); 0 turns it off. */
    statsLogIntervalMs: env.STATS_LOG_INTERVAL_MS,
    metrics: {
      /** Port of the Prometheus /metrics server, one per process (0: any free port); bound on `http.host`. */
      port: env.METRICS_PORT,
      /** False when METRICS_PORT was not set: npm start then picks free ports for its two roles. */
      portSet: metricsPortSet,
      /** False with HTTP_METRICS_DISABLED: no per-request count and duration (tally_http_*). */
      perRequest: !env.HTTP_METRICS_DISABLED,
    },
    redis: {
      url: env.REDIS_URL,
      /** Seed nodes of a Redis Cluster; when set, `url` is not used. */
      clusterNodes: env.REDIS_CLUSTER_NODES,
      /** Sentinels that name the master; when set, `url` is not used. */
      sentinels: env.REDIS_SENTINELS,
      sentinelMaster: env.REDIS_SENTINEL_MASTER,
      /** What a write waits for before it is acknowledged (lib/redis/acknowledgements.ts). */
      acknowledgement: {
        /** Replicas that must hold a write: a number, or "auto" (lib/redis/replica-watch.ts). */
        replicas: env.REDIS_WAIT_REPLICAS,
        timeoutMs: env.REDIS_WAIT_TIMEOUT_MS ?? Math.floor(env.REDIS_COMMAND_TIMEOUT_MS / 2),
        /** Also wait for the write to be fsynced to the AOF of the master and those replicas (WAITAOF). */
        aof: env.REDIS_WAIT_AOF,
      },
      keyPrefix: env.REDIS_KEY_PREFIX,
      commandTimeoutMs: env.REDIS_COMMAND_TIMEOUT_MS,
      /** Run even when maxmemory-policy may evict accepted increments (lib/redis/memory.ts). */
      allowEviction: env.REDIS_ALLOW_EVICTION,
      checkIntervalMs: env.REDIS_CHECK_INTERVAL_MS,
    },
    database: { url: env.DATABASE_URL, poolSize: env.DATABASE_POOL_SIZE, waitMs: env.MIGRATE_WAIT_S * 1000 },
    auth: resolveAuth(env),
    /** Null with RATE_LIMIT_DISABLED: no quota, for deployments whose proxy limits clients instead. */
    rateLimit: env.RATE_LIMIT_DISABLED
      ? null
      : { points: env.RATE_LIMIT_POINTS, durationSeconds: env.RATE_LIMIT_DURATION_S },
    maxKeyLength: env.MAX_KEY_LENGTH,
    maxBatchSize: env.MAX_BATCH_SIZE,
    idempotencyTtlSeconds: env.IDEMPOTENCY_TTL_S,
    /** Over every shard; past it, requests with an Idempotency-Key get a 503. */
    idempotencyMaxRecords: env.IDEMPOTENCY_MAX_RECORDS,
    sync: {
      intervalMs: env.SYNC_INTERVAL_MS,
      shards: env.SYNC_SHARDS,
      concurrency: env.SYNC_CONCURRENCY,
      scanCount: env.SYNC_SCAN_COUNT,
      leaseTtlMs: env.SYNC_LEASE_TTL_MS,
      /** Test-only: make the syncer crash or stall at a protocol step (syncer/faults.ts). */
      faultInjection: env.SYNC_FAULT_INJECTION,
      /** Ledger rows older than this are pruned, and a batch older than this is refused. */
      ledgerRetentionDays: env.SYNC_LEDGER_RETENTION_DAYS,
    },
    activity: {
      /** Undefined means the default, `<keyPrefix>:activity` (lib/redis/keyspace.ts). */
      stream: env.STATS_STREAM,
      streamMaxLen: env.STATS_STREAM_MAXLEN,
      webhookUrl: env.STATS_WEBHOOK_URL,
      webhookTimeoutMs: env.STATS_WEBHOOK_TIMEOUT_MS,
    },
  };
}

/** For entry points: parse, or print the reason and exit before anything starts. */
export function loadConfigOrExit(): Config {
  try {
    return parseConfig();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`tally: ${error.message}\n`);
    process.exit(EX_CONFIG);
  }
}

export { DEV_JWT_SECRET };
