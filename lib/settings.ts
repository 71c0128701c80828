import { availableParallelism } from "node:os";
import * as v from "valibot";

/**
 * Every environment variable tally reads, with its type, its default and its range: the one statement of
 * them. lib/config.ts shapes what they parse to into the Config the code uses; docs/configuration.md
 * describes each, and test/docs/configuration.test.ts checks that it names every one of them here, with
 * the same default.
 */

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

export const SETTINGS = v.object({
  NODE_ENV: v.optional(v.picklist(["development", "production", "test"]), "development"),
  HOST: v.optional(v.pipe(v.string(), v.nonEmpty()), "0.0.0.0"),
  PORT: integer(3333, 0, 65535),
  METRICS_PORT: integer(9464, 0, 65535),
  // Read at parse time, as a function, so that the docs state it as "the number of cores", not a figure.
  API_WORKERS: v.optional(wholeNumber(1, 256), () => String(availableParallelism())),
  HTTP_METRICS_DISABLED: flag(false),
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

  RATE_LIMIT_DISABLED: flag(false),
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

/** The settings as parsed. */
export type Settings = v.InferOutput<typeof SETTINGS>;
