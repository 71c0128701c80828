import { availableParallelism } from "node:os";
import { describe, expect, it } from "vitest";
import { ConfigError, DEV_JWT_SECRET, parseConfig } from "../../lib/config.ts";
import { MAX_KEY_BYTES } from "../../lib/settings.ts";

// Pure parsing: always an explicit environment object, never process.env, so the machine's own variables
// cannot leak in.

const SECRET = "a-test-secret-that-is-32-chars-long!";

function configError(env: Record<string, string>): ConfigError {
  try {
    parseConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error(`expected a ConfigError for ${JSON.stringify(env)}`);
}

describe("parseConfig", () => {
  it("fills in every documented default", () => {
    const config = parseConfig({});

    expect(config).toEqual({
      env: "development",
      http: {
        host: "0.0.0.0",
        port: 3333,
        bodyLimitBytes: 16_384,
        shutdownTimeoutMs: 10_000,
        drainDelayMs: 0,
        workers: availableParallelism(),
        headersTimeoutMs: 10_000,
        requestTimeoutMs: 30_000,
      },
      logLevel: "info",
      statsLogIntervalMs: 60_000,
      metrics: { port: 9464, portSet: false, perRequest: true },
      redis: {
        url: "redis://127.0.0.1:6379",
        sentinelMaster: "mymaster",
        acknowledgement: { replicas: "auto", timeoutMs: 500, aof: false },
        keyPrefix: "tally",
        commandTimeoutMs: 1_000,
        allowEviction: false,
        checkIntervalMs: 5_000,
      },
      database: { url: "postgres://postgres@127.0.0.1:5432/tally", poolSize: 4, waitMs: 30_000 },
      auth: { mode: "hs256", secret: DEV_JWT_SECRET, isDevelopmentSecret: true },
      rateLimit: { points: 1_000, durationSeconds: 1 },
      maxKeyLength: 256,
      maxBatchSize: 1_000,
      idempotencyTtlSeconds: 86_400,
      idempotencyMaxRecords: 1_000_000,
      sync: {
        intervalMs: 5_000,
        shards: 4,
        concurrency: 2,
        scanCount: 1_000,
        leaseTtlMs: 3_000,
        faultInjection: undefined,
        ledgerRetentionDays: 30,
      },
      activity: { stream: undefined, streamMaxLen: 10_080, webhookUrl: undefined, webhookTimeoutMs: 5_000 },
    });
  });

  it("reads set values, trimming whitespace, and treats an empty value as unset", () => {
    const config = parseConfig({
      PORT: " 8080 ",
      SYNC_INTERVAL_MS: "250",
      SYNC_SHARDS: "8",
      REDIS_KEY_PREFIX: "tally-test.1",
      LOG_LEVEL: "debug",
      RATE_LIMIT_POINTS: "",
      JWT_SECRET: SECRET,
    });

    expect(config.http.port).toBe(8080);
    expect(config.sync).toMatchObject({ intervalMs: 250, shards: 8 });
    expect(config.redis.keyPrefix).toBe("tally-test.1");
    expect(config.logLevel).toBe("debug");
    expect(config.rateLimit?.points).toBe(1_000);
  });

  it.each([
    { name: "PORT", value: "abc" },
    { name: "PORT", value: "70000" },
    { name: "PORT", value: "80.5" },
    { name: "METRICS_PORT", value: "65536" },
    { name: "SYNC_INTERVAL_MS", value: "0" },
    { name: "SYNC_SHARDS", value: "-1" },
    { name: "JWT_SECRET", value: "too-short" },
    { name: "JWT_JWKS_URL", value: "not a url" },
    { name: "REDIS_URL", value: "redis host" },
    { name: "REDIS_URL", value: "localhost:6379" },
    { name: "DATABASE_URL", value: "mysql://db/tally" },
    { name: "REDIS_KEY_PREFIX", value: "has space" },
    { name: "AUTH_DISABLED", value: "maybe" },
    { name: "NODE_ENV", value: "staging" },
    { name: "LOG_LEVEL", value: "verbose" },
    { name: "MAX_KEY_LENGTH", value: "2049" },
    { name: "IDEMPOTENCY_MAX_RECORDS", value: "0" },
    { name: "JWT_MAX_LIFETIME_S", value: "0" },
    { name: "REDIS_ALLOW_EVICTION", value: "sometimes" },
    { name: "HTTP_REQUEST_TIMEOUT_MS", value: "10" },
    { name: "REDIS_WAIT_REPLICAS", value: "all" },
    { name: "REDIS_WAIT_REPLICAS", value: "17" },
    { name: "REDIS_WAIT_TIMEOUT_MS", value: "0" },
    { name: "REDIS_WAIT_AOF", value: "sometimes" },
    { name: "REDIS_SENTINELS", value: "sentinel-without-port" },
  ])("rejects $name=$value with a ConfigError naming the variable", ({ name, value }) => {
    const error = configError({ [name]: value });

    expect(error.message).toContain(`  ${name}: `);
  });

  it("bounds MAX_KEY_LENGTH by what a Postgres index entry holds", () => {
    expect(parseConfig({ MAX_KEY_LENGTH: String(MAX_KEY_BYTES) }).maxKeyLength).toBe(MAX_KEY_BYTES);
    expect(configError({ MAX_KEY_LENGTH: "10000" }).message).toContain(
      `MAX_KEY_LENGTH: must be at most ${MAX_KEY_BYTES}`,
    );
  });

  it("reads JWT_MAX_LIFETIME_S into the token rules, and none when unset", () => {
    expect(parseConfig({ JWT_SECRET: SECRET, JWT_MAX_LIFETIME_S: "3600" }).auth).toMatchObject({
      mode: "hs256",
      maxLifetimeSeconds: 3600,
    });
    const unset = parseConfig({ JWT_SECRET: SECRET }).auth;
    expect(unset.mode === "hs256" ? unset.maxLifetimeSeconds : "not hs256").toBeUndefined();
  });

  it("tells a METRICS_PORT that was set, 0 included, from the default", () => {
    expect(parseConfig({ METRICS_PORT: "9100" }).metrics).toMatchObject({ port: 9100, portSet: true });
    expect(parseConfig({ METRICS_PORT: "0" }).metrics).toMatchObject({ port: 0, portSet: true });
    expect(parseConfig({ METRICS_PORT: "" }).metrics).toMatchObject({ port: 9464, portSet: false });
  });

  it("reads the acknowledgements' settings: auto or a number of replicas, a wait below the command timeout", () => {
    expect(parseConfig({ REDIS_WAIT_REPLICAS: "2", REDIS_WAIT_AOF: "yes" }).redis.acknowledgement).toEqual({
      replicas: 2,
      timeoutMs: 500,
      aof: true,
    });
    // The wait defaults to half the command timeout, which must outlast it.
    expect(parseConfig({ REDIS_COMMAND_TIMEOUT_MS: "200" }).redis.acknowledgement.timeoutMs).toBe(100);
    expect(configError({ REDIS_WAIT_TIMEOUT_MS: "1000" }).message).toBe(
      "REDIS_WAIT_TIMEOUT_MS (1000) must be below REDIS_COMMAND_TIMEOUT_MS (1000)",
    );
  });

  it("reads REDIS_SENTINELS and the master's name, and refuses them beside REDIS_CLUSTER_NODES", () => {
    expect(
      parseConfig({ REDIS_SENTINELS: "s1:26379,s2:26379", REDIS_SENTINEL_MASTER: "counters" }).redis,
    ).toMatchObject({
      sentinels: [
        { host: "s1", port: 26379 },
        { host: "s2", port: 26379 },
      ],
      sentinelMaster: "counters",
    });
    expect(configError({ REDIS_SENTINELS: "s1:26379", REDIS_CLUSTER_NODES: "c1:7000" }).message).toBe(
      "set either REDIS_CLUSTER_NODES or REDIS_SENTINELS, not both",
    );
  });

  it("reads REDIS_CLUSTER_NODES as a list of seed nodes", () => {
    const config = parseConfig({ REDIS_CLUSTER_NODES: "10.0.0.1:7000, redis-b:7001" });
    expect(config.redis.clusterNodes).toEqual([
      { host: "10.0.0.1", port: 7000 },
      { host: "redis-b", port: 7001 },
    ]);
    expect(configError({ REDIS_CLUSTER_NODES: "redis-a" }).message).toContain(
      "REDIS_CLUSTER_NODES: must be host:port",
    );
  });

  it("lists every bad variable at once", () => {
    const error = configError({ PORT: "abc", SYNC_INTERVAL_MS: "0" });

    expect(error.message).toMatch(/PORT: must be a whole number/);
    expect(error.message).toMatch(/SYNC_INTERVAL_MS: must be at least 50/);
  });
});

describe("auth configuration", () => {
  it("uses JWT_SECRET for HS256, with issuer and audience", () => {
    const config = parseConfig({ JWT_SECRET: SECRET, JWT_ISSUER: "https://issuer", JWT_AUDIENCE: "tally" });

    expect(config.auth).toEqual({
      mode: "hs256",
      secret: SECRET,
      issuer: "https://issuer",
      audience: "tally",
      isDevelopmentSecret: false,
    });
  });

  it("uses JWT_JWKS_URL for RS256/ES256 keys", () => {
    const config = parseConfig({ JWT_JWKS_URL: "https://issuer/.well-known/jwks.json" });

    expect(config.auth).toMatchObject({ mode: "jwks", jwksUrl: "https://issuer/.well-known/jwks.json" });
  });

  it("refuses JWT_SECRET and JWT_JWKS_URL together", () => {
    const error = configError({ JWT_SECRET: SECRET, JWT_JWKS_URL: "https://issuer/jwks.json" });

    expect(error.message).toMatch(/JWT_SECRET.*JWT_JWKS_URL.*not both/);
  });

  it("refuses production without any token verification", () => {
    const error = configError({ NODE_ENV: "production" });

    expect(error.message).toMatch(/JWT_SECRET or JWT_JWKS_URL/);
    expect(error.message).toMatch(/AUTH_DISABLED/);
  });

  it("accepts production with a real secret", () => {
    expect(parseConfig({ NODE_ENV: "production", JWT_SECRET: SECRET }).auth).toMatchObject({
      mode: "hs256",
      isDevelopmentSecret: false,
    });
  });

  it.each(["true", "1", "yes", "TRUE"])(
    "turns auth off with AUTH_DISABLED=%s, even in production",
    (value) => {
      expect(parseConfig({ NODE_ENV: "production", AUTH_DISABLED: value }).auth).toEqual({
        mode: "disabled",
      });
    },
  );

  it.each(["false", "0", "no"])("keeps auth on with AUTH_DISABLED=%s", (value) => {
    expect(parseConfig({ AUTH_DISABLED: value, JWT_SECRET: SECRET }).auth.mode).toBe("hs256");
  });

  it.each(["development", "test"])("falls back to the development secret when NODE_ENV=%s", (nodeEnv) => {
    expect(parseConfig({ NODE_ENV: nodeEnv }).auth).toEqual({
      mode: "hs256",
      secret: DEV_JWT_SECRET,
      isDevelopmentSecret: true,
    });
  });
});
