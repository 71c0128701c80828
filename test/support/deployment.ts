import pg from "pg";
import { onTestFinished } from "vitest";
import { closeRedis, connectRedis, createRedis, type RedisClient } from "../../lib/redis/client.ts";
import { allShardKeys } from "../../lib/redis/keyspace.ts";
import { mintToken } from "../../lib/tokens.ts";
import { Load, type LoadOptions } from "../../tools/load/accounted.ts";
import { spawnTally, type TallyProcess } from "../../tools/tally-process.ts";
import { freshDatabase, randomPrefix, sharedRedisUrl, waitFor } from "../harness/fixtures.ts";
import { TEST_SECRET } from "./api.ts";

export interface ApiProcess extends TallyProcess {
  url: string;
  /** Its Prometheus endpoint, e.g. http://127.0.0.1:41234/metrics. */
  metricsUrl: string;
}

export interface SyncerProcess extends TallyProcess {
  /** Its Prometheus endpoint; /healthz and /readyz are beside it. */
  metricsUrl: string;
}

export interface DeploymentOptions {
  /** Defaults to the shared test Redis. */
  redisUrl?: string;
  /** host:port of Redis Cluster nodes: the processes then get REDIS_CLUSTER_NODES instead of REDIS_URL. */
  clusterNodes?: string[];
  /** host:port of Sentinels and the master's name there: the processes then find Redis through them. */
  sentinels?: { addresses: string[]; master: string };
  /** Defaults to a fresh database on the shared Postgres. */
  databaseUrl?: string;
  /** Environment for every process (SYNC_INTERVAL_MS, SYNC_SHARDS, …). */
  env?: Record<string, string>;
}

/**
 * tally as production runs it, in real processes: `start:api` and `start:syncer` entry points started and
 * killed by the test, against one Redis and one Postgres, with clients for looking inside both.
 */
export class Deployment {
  readonly prefix = randomPrefix();
  readonly processes: TallyProcess[] = [];
  readonly redis: RedisClient;
  readonly pool: pg.Pool;
  readonly env: Record<string, string>;
  readonly #dropDatabase: (() => Promise<void>) | undefined;

  private constructor(
    env: Record<string, string>,
    redis: RedisClient,
    pool: pg.Pool,
    drop?: () => Promise<void>,
  ) {
    this.env = env;
    this.redis = redis;
    this.pool = pool;
    this.#dropDatabase = drop;
  }

  static async create(options: DeploymentOptions = {}): Promise<Deployment> {
    const database = options.databaseUrl ? undefined : await freshDatabase();
    const databaseUrl = options.databaseUrl ?? (database?.url as string);
    const redisUrl = options.redisUrl ?? sharedRedisUrl();
    const hostPort = (node: string) => {
      const [host, port] = node.split(":");
      return { host: host ?? "127.0.0.1", port: Number(port) };
    };
    const redis = createRedis({
      url: redisUrl,
      clusterNodes: options.clusterNodes?.map(hostPort),
      sentinels: options.sentinels?.addresses.map(hostPort),
      sentinelMaster: options.sentinels?.master,
      name: "test-inspector",
      commandTimeoutMs: 5_000,
    });
    redis.on("error", () => {});
    await connectRedis(redis);
    const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
    pool.on("error", () => {});
    const deployment = new Deployment(
      {
        REDIS_URL: redisUrl,
        ...(options.clusterNodes ? { REDIS_CLUSTER_NODES: options.clusterNodes.join(",") } : {}),
        ...(options.sentinels
          ? {
              REDIS_SENTINELS: options.sentinels.addresses.join(","),
              REDIS_SENTINEL_MASTER: options.sentinels.master,
            }
          : {}),
        DATABASE_URL: databaseUrl,
        JWT_SECRET: TEST_SECRET,
        RATE_LIMIT_POINTS: "1000000",
        SYNC_INTERVAL_MS: "500",
        SYNC_LEASE_TTL_MS: "1500",
        // One shard unless a test asks for more: a fault injected at a protocol step then hits the one batch
        // the test looks at. The e2e test runs the default shard count; the cluster test runs eight.
        SYNC_SHARDS: "1",
        HOST: "127.0.0.1",
        PORT: "0",
        // Each process takes a free metrics port and logs it (see metricsUrl).
        METRICS_PORT: "0",
        // One process per API node, so killing "the node" kills the process that serves.
        API_WORKERS: "1",
        // The suite runs many processes on two cores; a stall there must not turn into 503 timeouts that
        // tests expecting none would trip over. An unreachable Redis still fails at once.
        REDIS_COMMAND_TIMEOUT_MS: "5000",
        // Not half of that, the default: a write waits at most two of these for replicas that do not answer,
        // and the load generators give up on a request after five seconds.
        REDIS_WAIT_TIMEOUT_MS: "1000",
        ...options.env,
      },
      redis,
      pool,
      database?.drop,
    );
    deployment.env.REDIS_KEY_PREFIX = deployment.prefix;
    return deployment;
  }

  /** A Deployment closed when the calling test finishes, pass or fail; call it inside a test. */
  static async forTest(options: DeploymentOptions = {}): Promise<Deployment> {
    const deployment = await Deployment.create(options);
    onTestFinished(() => deployment.close());
    return deployment;
  }

  token(): Promise<string> {
    return mintToken({
      secret: TEST_SECRET,
      subject: "load",
      scopes: ["counters:write", "counters:read", "counters:reset"],
    });
  }

  /** The fault suite's accounted load over `apis`, with this deployment's token, started. */
  async startLoad(apis: ApiProcess[], options: Omit<LoadOptions, "targets" | "token"> = {}): Promise<Load> {
    return new Load({
      targets: () => apis.map((api) => api.url),
      token: await this.token(),
      ...options,
    }).start();
  }

  async startApi(env: Record<string, string> = {}): Promise<ApiProcess> {
    const api = spawnTally("api/main.ts", { ...this.env, ...env });
    this.processes.push(api);
    const listening = await api.waitForLog((line) => line.msg === "api listening");
    const url = String(listening.url);
    const metricsUrl = String((await api.waitForLog((line) => line.msg === "metrics listening")).url);
    // Listening is not ready: wait until Redis answers too.
    await waitFor(async () => (await fetch(`${url}/readyz`)).ok, { message: "api never became ready" });
    return Object.assign(api, { url, metricsUrl });
  }

  async startSyncer(env: Record<string, string> = {}): Promise<SyncerProcess> {
    const syncer = spawnTally("syncer/main.ts", { ...this.env, ...env });
    this.processes.push(syncer);
    await syncer.waitForLog((line) => line.msg === "syncer started");
    const metricsUrl = String((await syncer.waitForLog((line) => line.msg === "metrics listening")).url);
    return Object.assign(syncer, { metricsUrl });
  }

  /** True when Redis holds nothing that Postgres lacks: no deltas and no resets in any shard. */
  async isDrained(): Promise<boolean> {
    const shards = allShardKeys(this.prefix, Number(this.env.SYNC_SHARDS));
    // One key per call: in a Redis Cluster the shards live in different slots.
    const keys = shards.flatMap((shard) => [shard.dirty, shard.flushing, shard.resets, shard.flushingResets]);
    const existing = await Promise.all(keys.map((key) => this.redis.exists(key)));
    return existing.every((count) => count === 0);
  }

  async waitForDrain(timeoutMs = 20_000): Promise<void> {
    await waitFor(() => this.isDrained(), {
      timeoutMs,
      message: () =>
        `Redis still holds unsynced increments; the processes' last warnings:\n${this.warnings()}`,
    });
  }

  /**
   * The last warn and error lines of every process, to say why a test waited in vain: the latest of each
   * message, with how often it came, so that a warning repeated every cycle does not hide the one before it.
   */
  warnings(perProcess = 8): string {
    return this.processes
      .map((process, index) => {
        const latest = new Map<string, { line: Record<string, unknown>; times: number }>();
        for (const line of process.logs) {
          if (line.level !== "warn" && line.level !== "error") continue;
          const message = String(line.msg);
          const times = (latest.get(message)?.times ?? 0) + 1;
          // Deleted first, so that the map keeps messages in the order they last came.
          latest.delete(message);
          latest.set(message, { line, times });
        }
        return `#${index}: ${[...latest.values()]
          .slice(-perProcess)
          .map(
            ({ line, times }) => `${times > 1 ? `(${times} times, the last:) ` : ""}${JSON.stringify(line)}`,
          )
          .join("\n    ")}`;
      })
      .join("\n");
  }

  async counters(): Promise<Map<string, bigint>> {
    const { rows } = await this.pool.query<{ key: string; value: string }>(
      "SELECT key, value::text FROM counters",
    );
    return new Map(rows.map((row) => [row.key, BigInt(row.value)]));
  }

  /** now − the oldest shard's synced_through, read from Postgres; undefined before the first sync. */
  async stalenessSeconds(): Promise<number | undefined> {
    const { rows } = await this.pool.query<{ staleness: number | null }>(
      "SELECT extract(epoch FROM now() - min(synced_through))::float8 AS staleness FROM sync_state",
    );
    return rows[0]?.staleness ?? undefined;
  }

  async close(): Promise<void> {
    await Promise.all(this.processes.map((process) => process.stop("SIGKILL")));
    await closeRedis(this.redis);
    await this.pool.end();
    await this.#dropDatabase?.();
  }
}
