import { availableParallelism } from "node:os";
import * as v from "valibot";
import { EX_CONFIG } from "./exit.ts";

/**
 * Every setting tally reads, parsed once at start-up. A bad value stops the process with a message that
 * names the variable, instead of surfacing later as a confusing runtime error.
 */

const DEV_JWT_SECRET = "tally-development-secret-do-not-use-in-production";

/**
 * The most UTF-8 bytes a counter key may have, whatever MAX_KEY_LENGTH says: a Postgres btree entry holds at
 * most 2,704 bytes, and `counters.key` is one. A round figure below that, with room for the entry's header.
 */
export const MAX_KEY_BYTES = 2_048;

function wholeNumber(min: number, max: number) {
  return v.pipe(
    v.string(),
    v.trim(),
    v.regex(/^-?\d+$/, "must be a whole number"),
    v.transform(Number),
    v.minValue(min, `must be at least ${min}`),
    v.maxValue(max, `must be at most ${max}`),
  );
}

function integer(fallback: number, min: number, max = Number.MAX_SAFE_INTEGER) {
  return v.optional(wholeNumber(min, max), String(fallback));
}

function flag(fallback: boolean) {
  return v.pipe(
    v.optional(v.string(), String(fallback)),
    v.trim(),
    v.toLowerCase(),
    v.picklist(["true", "false", "1", "0", "yes", "no"], "must be true or false"),
    v.transform((value) => value === "true" || value === "1" || value === "yes"),
  );
}

const urlText = v.pipe(v.string(), v.trim(), v.url("must be a URL"));

function url(fallback: string, schemes: readonly string[]) {
  return v.optional(
    v.pipe(
      urlText,
      v.check((text) => schemes.includes(new URL(text).protocol), `must be a ${schemes.join(" or ")}// URL`),
    ),
    fallback,
  );
}

const optionalText = v.optional(v.pipe(v.string(), v.trim(), v.nonEmpty()));

const hostPortList = v.pipe(
  v.string(),
  v.regex(/^\s*[^\s,:]+:\d+\s*(,\s*[^\s,:]+:\d+\s*)*$/, "must be host:port[,host:port...]"),
  v.transform((text) =>
    text.split(",").map((node) => {
      const [host, port] = node.trim().split(":");
      return { host: host as string, port: Number(port) };
    }),
  ),
);

// More than any deployment runs per master; WAIT answers at once with the count it has when asked for more.
const MAX_WAIT_REPLICAS = 16;

const EnvSchema = v.object({
  NODE_ENV: v.optional(v.picklist(["development", "production", "test"]), "development"),
  HOST: v.optional(v.pipe(v.string(), v.nonEmpty()), "0.0.0.0"),
  PORT: integer(3333, 0, 65535),
  METRICS_PORT: integer(9464, 0, 65535),
  API_WORKERS: integer(availableParallelism(), 1, 256),
  LOG_LEVEL: v.optional(v.picklist(["fatal", "error", "warn", "info", "debug", "trace", "silent"]), "info"),

  REDIS_URL: url("redis://127.0.0.1:6379", ["redis:", "rediss:"]),
  REDIS_CLUSTER_NODES: v.optional(hostPortList),
  REDIS_SENTINELS: v.optional(hostPortList),
  REDIS_SENTINEL_MASTER: v.optional(v.pipe(v.string(), v.trim(), v.nonEmpty()), "mymaster"),
  REDIS_WAIT_REPLICAS: v.optional(
    v.union(
      [v.literal("auto"), wholeNumber(0, MAX_WAIT_REPLICAS)],
      `must be auto or a whole number from 0 to ${MAX_WAIT_REPLICAS}`,
    ),
    "auto",
  ),
  REDIS_WAIT_TIMEOUT_MS: v.optional(wholeNumber(1, 60_000)),
  REDIS_WAIT_AOF: flag(false),
  REDIS_KEY_PREFIX: v.optional(
    v.pipe(v.string(), v.regex(/^[A-Za-z0-9_.-]{1,64}$/, "must be 1-64 of A-Z a-z 0-9 _ . -")),
    "tally",
  ),
  REDIS_COMMAND_TIMEOUT_MS: integer(1_000, 10, 60_000),
  REDIS_ALLOW_EVICTION: flag(false),
  REDIS_CHECK_INTERVAL_MS: integer(5_000, 100, 600_000),

  DATABASE_URL: url("postgres://postgres@127.0.0.1:5432/tally", ["postgres:", "postgresql:"]),
  DATABASE_POOL_SIZE: integer(4, 1, 100),
  MIGRATE_WAIT_S: integer(30, 0, 3_600),

  JWT_SECRET: v.optional(
    v.pipe(v.string(), v.minLength(32, "must be at least 32 characters (HS256 key strength)")),
  ),
  JWT_JWKS_URL: v.optional(urlText),
  JWT_ISSUER: optionalText,
  JWT_AUDIENCE: optionalText,
  AUTH_DISABLED: flag(false),

  RATE_LIMIT_POINTS: integer(1_000, 1),
  RATE_LIMIT_DURATION_S: integer(1, 1, 86_400),
  JWT_MAX_LIFETIME_S: v.optional(wholeNumber(1, 366 * 86_400)),

  MAX_KEY_LENGTH: integer(256, 1, MAX_KEY_BYTES),
  MAX_BATCH_SIZE: integer(1_000, 1, 10_000),
  IDEMPOTENCY_TTL_S: integer(86_400, 1, 30 * 86_400),
  IDEMPOTENCY_MAX_RECORDS: integer(1_000_000, 1, 1_000_000_000),
  BODY_LIMIT_BYTES: integer(16_384, 64, 1_048_576),
  HTTP_HEADERS_TIMEOUT_MS: integer(10_000, 1_000, 600_000),
  HTTP_REQUEST_TIMEOUT_MS: integer(30_000, 1_000, 600_000),
  SHUTDOWN_TIMEOUT_MS: integer(10_000, 0, 600_000),
  SHUTDOWN_DRAIN_DELAY_MS: integer(0, 0, 600_000),
  STATS_LOG_INTERVAL_MS: integer(60_000, 0, 86_400_000),

  SYNC_INTERVAL_MS: integer(5_000, 50, 300_000),
  SYNC_SHARDS: integer(4, 1, 1_024),
  SYNC_CONCURRENCY: integer(2, 1, 64),
  SYNC_SCAN_COUNT: integer(1_000, 10, 100_000),
  SYNC_LEASE_TTL_MS: integer(3_000, 100, 600_000),
  SYNC_FAULT_INJECTION: optionalText,
  SYNC_LEDGER_RETENTION_DAYS: integer(30, 1, 3_650),

  // Per-minute activity (syncer/activity/). The stream defaults to `<REDIS_KEY_PREFIX>:activity`.
  STATS_STREAM: v.optional(v.pipe(v.string(), v.regex(/^\S{1,256}$/, "must be 1-256 non-space characters"))),
  STATS_STREAM_MAXLEN: integer(10_080, 0, 100_000_000),
  STATS_WEBHOOK_URL: v.optional(
    v.pipe(
      urlText,
      v.check(
        (text) => ["http:", "https:"].includes(new URL(text).protocol),
        "must be an http:// or https:// URL",
      ),
    ),
  ),
  STATS_WEBHOOK_TIMEOUT_MS: integer(5_000, 100, 600_000),
});

type Env = v.InferOutput<typeof EnvSchema>;

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

export interface Config {
  env: Env["NODE_ENV"];
  http: {
    host: string;
    port: number;
    bodyLimitBytes: number;
    shutdownTimeoutMs: number;
    /** How long a draining API node keeps serving (and failing /readyz) before it stops listening. */
    drainDelayMs: number;
    /** API processes (node:cluster workers) sharing the port. */
    workers: number;
    /** How long a client may take to send a request's headers, and the whole request. */
    headersTimeoutMs: number;
    requestTimeoutMs: number;
  };
  logLevel: Env["LOG_LEVEL"];
  /** Period of the "process stats" log line (memory, event-loop delay); 0 turns it off. */
  statsLogIntervalMs: number;
  metrics: {
    /** Port of the Prometheus /metrics server, one per process (0: any free port); bound on `http.host`. */
    port: number;
    /** False when METRICS_PORT was not set: npm start then picks free ports for its two roles. */
    portSet: boolean;
  };
  redis: {
    url: string;
    /** Seed nodes of a Redis Cluster; when set, REDIS_URL is not used. */
    clusterNodes: { host: string; port: number }[] | undefined;
    /** Redis Sentinels that name the master; when set, REDIS_URL is not used. */
    sentinels: { host: string; port: number }[] | undefined;
    /** The master's name at the Sentinels. */
    sentinelMaster: string;
    /** What a write waits for before it is acknowledged (lib/redis/acknowledgements.ts). */
    acknowledgement: {
      /** Replicas of the master that must hold a write: a number, or "auto" (see lib/redis/replica-watch.ts). */
      replicas: number | "auto";
      timeoutMs: number;
      /** Wait for the write to be fsynced to the AOF of the master and of those replicas (WAITAOF). */
      aof: boolean;
    };
    keyPrefix: string;
    commandTimeoutMs: number;
    /** Run even when maxmemory-policy may evict accepted increments (lib/redis/memory.ts). */
    allowEviction: boolean;
    /** How often maxmemory-policy and memory use are read. */
    checkIntervalMs: number;
  };
  database: {
    url: string;
    poolSize: number;
    /** How long `npm run migrate` and `npm start` wait for Postgres to accept connections. */
    waitMs: number;
  };
  auth: AuthConfig;
  rateLimit: { points: number; durationSeconds: number };
  maxKeyLength: number;
  /** Most increments in one POST /increments. */
  maxBatchSize: number;
  /** How long an Idempotency-Key is remembered per client. */
  idempotencyTtlSeconds: number;
  /** Most Idempotency-Key records held at once, over every shard; past it such requests get a 503. */
  idempotencyMaxRecords: number;
  sync: {
    intervalMs: number;
    shards: number;
    /** Shards one syncer applies at once, each on its own Postgres connection. */
    concurrency: number;
    scanCount: number;
    leaseTtlMs: number;
    /** Test-only: make the syncer crash or stall at a protocol step (syncer/faults.ts). */
    faultInjection: string | undefined;
    /** Ledger rows older than this are pruned, and a batch older than this is refused (see syncer.ts). */
    ledgerRetentionDays: number;
  };
  /** The syncer's per-minute activity report (syncer/activity/). */
  activity: {
    /** Stream key; undefined means the default, `<keyPrefix>:activity` (lib/redis/keyspace.ts). */
    stream: string | undefined;
    /** Approximate cap (XADD MAXLEN ~); 0 writes no stream. 10080 = a week of minutes. */
    streamMaxLen: number;
    webhookUrl: string | undefined;
    webhookTimeoutMs: number;
  };
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

function resolveAuth(env: Env): AuthConfig {
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
function checkRedisSettings(env: Env): void {
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
  const result = v.safeParse(EnvSchema, present, { abortPipeEarly: true });
  if (!result.success) {
    const lines = result.issues.map((issue) => {
      const name = v.getDotPath(issue) ?? "environment";
      return `  ${name}: ${issue.message} (got ${JSON.stringify(issue.input)})`;
    });
    throw new ConfigError(`invalid configuration:\n${lines.join("\n")}`);
  }
  const env = result.output;
  checkRedisSettings(env);
  return {
    env: env.NODE_ENV,
    http: {
      host: env.HOST,
      port: env.PORT,
      bodyLimitBytes: env.BODY_LIMIT_BYTES,
      shutdownTimeoutMs: env.SHUTDOWN_TIMEOUT_MS,
      drainDelayMs: env.SHUTDOWN_DRAIN_DELAY_MS,
      workers: env.API_WORKERS,
      headersTimeoutMs: env.HTTP_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: env.HTTP_REQUEST_TIMEOUT_MS,
    },
    logLevel: env.LOG_LEVEL,
    statsLogIntervalMs: env.STATS_LOG_INTERVAL_MS,
    metrics: { port: env.METRICS_PORT, portSet: present.METRICS_PORT !== undefined },
    redis: {
      url: env.REDIS_URL,
      clusterNodes: env.REDIS_CLUSTER_NODES,
      sentinels: env.REDIS_SENTINELS,
      sentinelMaster: env.REDIS_SENTINEL_MASTER,
      acknowledgement: {
        replicas: env.REDIS_WAIT_REPLICAS,
        timeoutMs: env.REDIS_WAIT_TIMEOUT_MS ?? Math.floor(env.REDIS_COMMAND_TIMEOUT_MS / 2),
        aof: env.REDIS_WAIT_AOF,
      },
      keyPrefix: env.REDIS_KEY_PREFIX,
      commandTimeoutMs: env.REDIS_COMMAND_TIMEOUT_MS,
      allowEviction: env.REDIS_ALLOW_EVICTION,
      checkIntervalMs: env.REDIS_CHECK_INTERVAL_MS,
    },
    database: { url: env.DATABASE_URL, poolSize: env.DATABASE_POOL_SIZE, waitMs: env.MIGRATE_WAIT_S * 1000 },
    auth: resolveAuth(env),
    rateLimit: { points: env.RATE_LIMIT_POINTS, durationSeconds: env.RATE_LIMIT_DURATION_S },
    maxKeyLength: env.MAX_KEY_LENGTH,
    maxBatchSize: env.MAX_BATCH_SIZE,
    idempotencyTtlSeconds: env.IDEMPOTENCY_TTL_S,
    idempotencyMaxRecords: env.IDEMPOTENCY_MAX_RECORDS,
    sync: {
      intervalMs: env.SYNC_INTERVAL_MS,
      shards: env.SYNC_SHARDS,
      concurrency: env.SYNC_CONCURRENCY,
      scanCount: env.SYNC_SCAN_COUNT,
      leaseTtlMs: env.SYNC_LEASE_TTL_MS,
      faultInjection: env.SYNC_FAULT_INJECTION,
      ledgerRetentionDays: env.SYNC_LEDGER_RETENTION_DAYS,
    },
    activity: {
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
