import { Cluster, type Redis } from "ioredis";
import type { Registry } from "prom-client";
import type { Config } from "../config.ts";
import { exitForOperator } from "../exit.ts";
import type { Logger } from "../logger.ts";
import { type AcknowledgementPolicy, Acknowledgements } from "./acknowledgements.ts";
import type { RedisClient } from "./client.ts";
import { masterConnections } from "./info.ts";
import { registerMasterGauge } from "./master-gauge.ts";
import { type MasterConnection, Masters } from "./masters.ts";
import { PeriodicReading } from "./periodic-reading.ts";
import { ReplicaPolicy } from "./replica-policy.ts";
import {
  myIdInClusterNodes,
  parseReplicationInfo,
  promotableInClusterNodes,
  type ReplicaReading,
  versionAtLeast,
} from "./replicas.ts";
import { SentinelReplicas } from "./sentinel-replicas.ts";

export interface ReplicaWatchOptions {
  redis: RedisClient;
  /** Under Sentinel: who to ask which replicas could be promoted, and the master's name there. */
  sentinels?: { host: string; port: number }[];
  sentinelMaster?: string;
  /** REDIS_WAIT_REPLICAS: a number, or "auto" (one replica wherever a failover could promote one). */
  replicas: number | "auto";
  /** REDIS_WAIT_AOF: acknowledgements wait for fsync (WAITAOF, Redis 7.2 or later, appendonly on). */
  aof: boolean;
  intervalMs: number;
  logger: Logger;
  /** Called once, when the first reading finds that Redis cannot give the acknowledgements configured. */
  onUnsupportedAtStart: (message: string) => void;
}

// A master that a write needs to know about is read at once, but not more often than this.
const ON_DEMAND_READ_MS = 250;

/**
 * Reads what each Redis master says of its replicas (INFO replication, and the cluster bus or the Sentinels
 * for which of them a failover could promote) when the client connects, every `intervalMs` after, and at
 * once when a write meets a master not read yet or replicas that fell short; and answers, through a
 * ReplicaPolicy, how many replicas a write to that master must reach before it is acknowledged.
 */
export class ReplicaWatch implements AcknowledgementPolicy {
  readonly #options: ReplicaWatchOptions;
  readonly #policy: ReplicaPolicy;
  readonly #reading: PeriodicReading;
  readonly #sentinels: SentinelReplicas | undefined;
  #checked = false;
  readonly #logged = new Map<string, string>();
  readonly #readOnDemandAt = new Map<string, number>();

  constructor(options: ReplicaWatchOptions) {
    this.#options = options;
    const sentinels = options.sentinels ?? [];
    this.#sentinels =
      sentinels.length > 0
        ? new SentinelReplicas(sentinels, options.sentinelMaster ?? "mymaster")
        : undefined;
    this.#policy = new ReplicaPolicy(
      options.replicas,
      options.redis instanceof Cluster || sentinels.length > 0,
    );
    this.#reading = new PeriodicReading({
      redis: options.redis,
      intervalMs: options.intervalMs,
      read: () => this.#read(),
      logger: options.logger,
      refusedMessage:
        "cannot read Redis INFO replication (or the replicas' state): writes wait for the replicas REDIS_WAIT_REPLICAS names, one where it says auto",
    });
  }

  start(): void {
    this.#reading.start();
  }

  stop(): void {
    this.#reading.stop();
    this.#sentinels?.close();
  }

  get observesConnections(): boolean {
    return this.#policy.observesConnections;
  }

  /**
   * How many replicas must hold a write to `node` (host:port of a master, reached on `connection`) before
   * it is acknowledged. A master not read yet is read at once, and asks for one replica meanwhile.
   */
  required(node: string, connection: Redis): number {
    if (!this.#policy.knows(node)) this.#readSoon({ node, connection });
    return this.#policy.required(node, performance.now());
  }

  observe(node: string, connected: number): void {
    this.#policy.noteConnected(node, connected, performance.now());
  }

  /** The replicas did not confirm in time: read the master again, one of them may be gone for good. */
  fellShort(node: string, connection: Redis): void {
    this.#readSoon({ node, connection });
  }

  get readings(): readonly ReplicaReading[] {
    return this.#policy.readings;
  }

  /** Reads every master now (one reading at a time); a failed reading keeps the last ones. */
  check(): Promise<void> {
    return this.#reading.now();
  }

  /** Exports per master the replicas a failover could promote and how many a write waits for. */
  register(registry: Registry): void {
    registerMasterGauge(
      registry,
      {
        name: "tally_redis_replicas",
        help: "Replicas a failover could promote in a Redis master's place, as last read",
      },
      () => this.readings.map(({ node, promotable }) => ({ node, value: promotable })),
    );
    registerMasterGauge(
      registry,
      {
        name: "tally_redis_wait_replicas",
        help: "Replicas that must hold a write to a Redis master before it is acknowledged (REDIS_WAIT_REPLICAS)",
      },
      () => {
        const now = performance.now();
        return this.readings.map(({ node }) => ({ node, value: this.#policy.required(node, now) }));
      },
    );
  }

  async #read(): Promise<void> {
    const startedAt = performance.now();
    const readings = await this.#readMasters();
    for (const reading of readings) this.#policy.noteReading(reading, performance.now());
    // A master read on demand since (a Cluster client may not list a new master yet) stays known.
    this.#policy.forgetUnreadSince(Math.min(startedAt, performance.now() - 2 * this.#options.intervalMs));
    const firstReading = !this.#checked;
    this.#checked = true;
    if (firstReading) {
      const unsupported = this.#unsupported(readings);
      if (unsupported !== undefined) {
        this.#options.onUnsupportedAtStart(unsupported);
        return;
      }
    }
    this.#logChanges(readings);
  }

  async #readMasters(): Promise<ReplicaReading[]> {
    const sentinelPromotable = await this.#sentinels?.promotable();
    return Promise.all(
      masterConnections(this.#options.redis).map((master) => this.#readMaster(master, sentinelPromotable)),
    );
  }

  #readSoon(master: MasterConnection): void {
    const now = performance.now();
    if (now - (this.#readOnDemandAt.get(master.node) ?? Number.NEGATIVE_INFINITY) < ON_DEMAND_READ_MS) return;
    this.#readOnDemandAt.set(master.node, now);
    void this.#readOne(master);
  }

  async #readOne(master: MasterConnection): Promise<void> {
    try {
      const sentinelPromotable = await this.#sentinels?.promotable();
      const reading = await this.#readMaster(master, sentinelPromotable);
      this.#policy.noteReading(reading, performance.now());
      this.#logChanges([reading]);
    } catch {
      // Read again with every master, or at the next write that needs it.
    }
  }

  async #readMaster(
    { node, connection }: MasterConnection,
    sentinelPromotable: number | undefined,
  ): Promise<ReplicaReading> {
    const info = parseReplicationInfo(node, await connection.info("replication", "persistence", "server"));
    let promotable = sentinelPromotable ?? info.connected;
    if (this.#options.redis instanceof Cluster) {
      const nodes = String(await connection.call("CLUSTER", "NODES"));
      const myId = myIdInClusterNodes(nodes);
      promotable = myId === undefined ? info.connected : promotableInClusterNodes(nodes, myId);
    }
    return { ...info, promotable };
  }

  /** Why Redis cannot give the acknowledgements configured, or undefined when it can. */
  #unsupported(readings: ReplicaReading[]): string | undefined {
    if (!this.#options.aof) return undefined;
    const old = readings.filter((reading) => !versionAtLeast(reading.version, "7.2"));
    if (old.length > 0) {
      return `REDIS_WAIT_AOF=true needs WAITAOF, which Redis 7.2 brought; ${old.map((r) => `${r.node} runs ${r.version}`).join(", ")}. Upgrade Redis, or unset REDIS_WAIT_AOF`;
    }
    const noAof = readings.filter((reading) => !reading.aof);
    if (noAof.length > 0) {
      return `REDIS_WAIT_AOF=true waits for the master's own fsync, but appendonly is off on ${noAof.map((r) => r.node).join(", ")}. Turn appendonly on, or unset REDIS_WAIT_AOF`;
    }
    return undefined;
  }

  /** One line per master when what its writes wait for changes, and a warning where that can fall short. */
  #logChanges(readings: ReplicaReading[]): void {
    const { logger, replicas } = this.#options;
    for (const reading of readings) {
      const required = this.#policy.required(reading.node, performance.now());
      const state = `${required}/${reading.promotable}/${reading.fenced}`;
      if (this.#logged.get(reading.node) === state) continue;
      this.#logged.set(reading.node, state);
      const context = { node: reading.node, replicas: reading.promotable, waitReplicas: required };
      if (required > reading.promotable) {
        logger.warn(
          context,
          `writes to this Redis master wait for ${required} replica(s) (REDIS_WAIT_REPLICAS=${replicas}) but it has ${reading.promotable} a failover could promote: each write waits REDIS_WAIT_TIMEOUT_MS and is answered 503 replication_unconfirmed until they are back`,
        );
      } else if (required > 0 && !reading.fenced) {
        logger.warn(
          context,
          "this Redis master has replicas but min-replicas-to-write is not set: cut off from them it keeps taking writes a failover will discard, each answered 503 replication_unconfirmed after REDIS_WAIT_TIMEOUT_MS instead of refused at once. Set min-replicas-to-write 1 and min-replicas-max-lag 10 on every node",
        );
      } else {
        logger.info(
          context,
          required > 0
            ? "writes to this Redis master are acknowledged once its replicas hold them"
            : "writes to this Redis master are acknowledged without a replica: it has none a failover could promote",
        );
      }
    }
  }
}

/** The watch a tally process runs, as configured: acknowledgements Redis cannot give stop the process. */
export function replicaWatchFor(redis: RedisClient, config: Config, logger: Logger): ReplicaWatch {
  return new ReplicaWatch({
    redis,
    sentinels: config.redis.sentinels,
    sentinelMaster: config.redis.sentinelMaster,
    replicas: config.redis.acknowledgement.replicas,
    aof: config.redis.acknowledgement.aof,
    intervalMs: config.redis.checkIntervalMs,
    logger,
    onUnsupportedAtStart: (message) => exitForOperator(logger, message),
  });
}

/** How a process's counter writes are acknowledged: on `redis`'s masters, after the replicas `watch` asks for. */
export function acknowledgementsFor(
  redis: RedisClient,
  watch: ReplicaWatch,
  config: Config,
  logger: Logger,
): Acknowledgements {
  return new Acknowledgements({
    masters: new Masters(redis),
    policy: watch,
    timeoutMs: config.redis.acknowledgement.timeoutMs,
    aof: config.redis.acknowledgement.aof,
    logger,
  });
}
