import { readFileSync } from "node:fs";
import { Cluster, type ClusterNode, Redis, type RedisOptions, type Result } from "ioredis";

/** A single Redis or a Redis Cluster: every command tally issues touches one slot, so either serves. */
export type RedisClient = Redis | Cluster;

/** The Lua scripts in ./scripts, registered on every client with defineCommand. */
const SCRIPTS = {
  tallySwap: { file: "swap.lua", keys: 4 },
  tallyFinish: { file: "finish.lua", keys: 2 },
  tallyPending: { file: "pending.lua", keys: 4 },
  tallyLeaseClaim: { file: "lease-claim.lua", keys: 1 },
  tallyLeaseRelease: { file: "lease-release.lua", keys: 1 },
  tallySyncersHeartbeat: { file: "syncers-heartbeat.lua", keys: 1 },
  tallyIncrementOnce: { file: "increment-once.lua", keys: 3 },
  tallyIncrementBatch: { file: "increment-batch.lua", keys: 1 },
} as const;

// Commands their callers already batch per event-loop turn: auto-pipelining would only hold each one
// back for another turn before writing it.
const BATCHED_BY_CALLER = ["tallyIncrementBatch"];

type Nullable<T> = T | null;
type Key = string;

declare module "ioredis" {
  interface RedisCommander<Context> {
    tallySwap(
      dirty: Key,
      flushing: Key,
      flushingMeta: Key,
      seq: Key,
      batchId: string,
      swappedAtMs: number,
      minSeq: number,
    ): Result<
      | ["new", batchId: string, seq: string, swappedAtMs: string, renumbered: 0 | 1]
      | ["resumed", batchId: string, seq: string, swappedAtMs: string]
      | ["empty"]
      | ["behind", seq: string],
      Context
    >;
    tallyFinish(flushing: Key, flushingMeta: Key, batchId: string): Result<0 | 1, Context>;
    tallyPending(
      dirty: Key,
      flushing: Key,
      flushingMeta: Key,
      seq: Key,
      counterKey: string,
    ): Result<[Nullable<string>, Nullable<string>, Nullable<string>, Nullable<string>], Context>;
    tallyLeaseClaim(lease: Key, holder: string, ttlMs: number): Result<0 | 1, Context>;
    tallyLeaseRelease(lease: Key, holder: string): Result<0 | 1, Context>;
    tallySyncersHeartbeat(syncers: Key, holder: string, aliveMs: number): Result<number, Context>;
    /** `pairs`: counter key, value, counter key, value, ... */
    tallyIncrementOnce(
      dirty: Key,
      idempotencyRecord: Key,
      idempotencyIndex: Key,
      fingerprint: string,
      ttlSeconds: number,
      nowMs: number,
      maxRecords: number,
      recordDigest: string,
      ...pairs: (string | number)[]
    ): Result<1 | 0 | -1 | -2 | string, Context>;
    /** `groupsAndPairs`: the group count, each group's size, then every group's key, value pairs. */
    tallyIncrementBatch(dirty: Key, ...groupsAndPairs: (string | number)[]): Result<(1 | string)[], Context>;
  }
}

/** Where the service's Redis is: one server by URL, a Redis Cluster, or a master that Sentinels name. */
export interface RedisLocation {
  url: string;
  /** Seed nodes of a Redis Cluster; when set, `url` is ignored and a Cluster client is made. */
  clusterNodes?: { host: string; port: number }[];
  /** Sentinels to ask for the master named `sentinelMaster`; when set, `url` is ignored. */
  sentinels?: { host: string; port: number }[];
  sentinelMaster?: string;
}

export interface RedisClientOptions extends RedisLocation {
  /** Connection name shown by CLIENT LIST, to tell the API's connections from the syncer's. */
  name: string;
  commandTimeoutMs: number;
  /**
   * Batch every command issued in one event-loop tick into one write. The API turns it on: under load a
   * single round trip then carries hundreds of HINCRBYs.
   */
  autoPipelining?: boolean;
}

export function createRedis(options: RedisClientOptions): RedisClient {
  const redisOptions: RedisOptions = {
    connectionName: options.name,
    // Fail fast instead of queueing: a command issued while Redis is unreachable is rejected at once
    // (the API answers 503), never parked in a memory queue that grows for as long as the outage lasts.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: options.commandTimeoutMs,
    connectTimeout: Math.max(options.commandTimeoutMs, 2_000),
    enableAutoPipelining: options.autoPipelining ?? false,
    autoPipeliningIgnoredCommands: BATCHED_BY_CALLER,
    // Reconnect forever, quickly at first; the process recovers by itself when Redis is back.
    retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 10), 1_000),
    lazyConnect: true,
  };
  const redis: RedisClient = options.clusterNodes
    ? new Cluster(options.clusterNodes as ClusterNode[], {
        redisOptions,
        enableOfflineQueue: false,
        // Never on a cluster: ioredis groups auto-pipelined commands by node and handles MOVED for the
        // pipeline as a whole, so after a master restarts the commands of its slots keep coming back MOVED
        // (redis/ioredis#2075; here a killed master's slots failed for 40 s under load). The increments
        // are batched per event-loop turn and shard anyway.
        enableAutoPipelining: false,
        lazyConnect: true,
        // Reads and writes both go to masters: a replica may lag, and every read here is one a client
        // expects to see its own writes in.
        scaleReads: "master",
        // A slot whose master is down fails the command at once (503 for the API) instead of being retried
        // in a queue for as long as the failover takes.
        retryDelayOnClusterDown: 0,
        retryDelayOnFailover: 100,
        maxRedirections: 4,
        clusterRetryStrategy: (attempt) => Math.min(100 * 2 ** Math.min(attempt, 10), 2_000),
        // Writes that wait for replicas go to a master's own connection (lib/redis/masters.ts), which follows
        // no MOVED: the slot map is refreshed when such a write fails, and on this period besides.
        slotsRefreshInterval: SLOTS_REFRESH_INTERVAL_MS,
      })
    : options.sentinels
      ? new Redis({
          ...redisOptions,
          sentinels: options.sentinels,
          name: options.sentinelMaster ?? "mymaster",
          role: "master",
          // Told of a failover by the Sentinels (+switch-master), the client reconnects to the new master at
          // once instead of when the old one's connection breaks.
          failoverDetector: true,
          // A master demoted while we were connected answers writes with READONLY: ask the Sentinels again.
          reconnectOnError: (error) => error.message.startsWith("READONLY"),
        })
      : new Redis(options.url, redisOptions);
  defineScripts(redis);
  // A Cluster runs the counters' writes on its masters' own connections too (lib/redis/masters.ts).
  if (redis instanceof Cluster) redis.on("+node", (node: Redis) => defineScripts(node));
  return redis;
}

const SLOTS_REFRESH_INTERVAL_MS = 5_000;

const SCRIPT_SOURCES = Object.entries(SCRIPTS).map(([name, script]) => ({
  name,
  numberOfKeys: script.keys,
  lua: readFileSync(new URL(`./scripts/${script.file}`, import.meta.url), "utf8"),
}));

function defineScripts(redis: RedisClient): void {
  for (const { name, numberOfKeys, lua } of SCRIPT_SOURCES) redis.defineCommand(name, { numberOfKeys, lua });
}

/** Connects, waiting up to `timeoutMs`; the client keeps reconnecting by itself after that. */
export async function connectRedis(redis: RedisClient, timeoutMs = 10_000): Promise<void> {
  const isReady = () => redis.status === "ready";
  if (isReady()) return;
  // A failed first attempt is fine: the client keeps retrying, and we wait for "ready" below.
  if (redis.status === "wait") await redis.connect().catch(() => {});
  if (isReady()) return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      redis.off("ready", onReady);
      reject(new Error(`Redis did not become ready within ${timeoutMs} ms`));
    }, timeoutMs);
    const onReady = () => {
      clearTimeout(timer);
      resolve();
    };
    redis.once("ready", onReady);
  });
}
