import { Cluster, type ClusterNode, Redis, type RedisOptions } from "ioredis";

/** A single Redis or a Redis Cluster: every command tally issues touches one slot, so either serves. */
export type RedisClient = Redis | Cluster;

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
    // Off: the callers batch what is worth batching per event-loop turn (increments, rate-limit consumes),
    // and ioredis' auto-pipelining would add a pipeline object and a deferred write to each of those few
    // commands (docs/design.md, choices made for speed).
    enableAutoPipelining: false,
    // Reconnect forever, quickly at first; the process recovers by itself when Redis is back.
    retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 10), 1_000),
    lazyConnect: true,
  };
  const redis: RedisClient = options.clusterNodes
    ? new Cluster(options.clusterNodes as ClusterNode[], {
        redisOptions,
        enableOfflineQueue: false,
        // Off here too, and for one more reason: ioredis groups auto-pipelined commands by node and handles
        // MOVED for the pipeline as a whole, so after a master restarts the commands of its slots keep
        // coming back MOVED (redis/ioredis#2075; here a killed master's slots failed for 40 s under load).
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
          // A Sentinel that accepts connections but does not answer (paused, overloaded) is skipped for the
          // next one instead of holding up the reconnection for as long as it stays silent.
          sentinelCommandTimeout: options.commandTimeoutMs,
        })
      : new Redis(options.url, redisOptions);
  if (options.sentinels) reconnectAfterEnd(redis);
  return redis;
}

const closedOnPurpose = new WeakSet<RedisClient>();

/** Closes a client for good: QUIT when it is connected, a plain disconnect otherwise. */
export async function closeRedis(redis: RedisClient): Promise<void> {
  closedOnPurpose.add(redis);
  if (redis.status !== "ready") {
    redis.disconnect();
    return;
  }
  await redis.quit().catch(() => redis.disconnect());
}

/**
 * ioredis ends a Sentinel client for good when the Sentinels announce a failover while the client is asking
 * them where the master is: its failover detector closes the connection being made, and a connection closed
 * while being made ends the client. That is the very failover the client should follow, so nothing but
 * closeRedis may end it.
 */
function reconnectAfterEnd(redis: RedisClient): void {
  redis.on("end", () => {
    if (closedOnPurpose.has(redis)) return;
    setTimeout(() => {
      if (!closedOnPurpose.has(redis) && redis.status === "end") redis.connect().catch(() => {});
    }, RECONNECT_AFTER_END_MS).unref();
  });
}

const RECONNECT_AFTER_END_MS = 100;

const SLOTS_REFRESH_INTERVAL_MS = 5_000;

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
