import type { Registry } from "prom-client";
import type { Config } from "../config.ts";
import { exitForOperator } from "../exit.ts";
import type { Logger } from "../logger.ts";
import type { RedisClient } from "./client.ts";
import { registerMasterGauge } from "./master-gauge.ts";
import { evictionRisk, hasRoomAgain, isFull, type RedisMemory, readRedisMemory } from "./memory.ts";
import { PeriodicReading } from "./periodic-reading.ts";

export interface RedisMemoryWatchOptions {
  redis: RedisClient;
  logger: Logger;
  intervalMs: number;
  /** REDIS_ALLOW_EVICTION: the operator accepts that an evicting policy may lose counts. */
  allowEviction: boolean;
  /**
   * Called once, when the first reading finds a policy that may evict counts and the operator did not allow
   * it: the process must not start. Later changes only make the process not ready.
   */
  onUnsafeAtStart: (message: string) => void;
}

/** Why Redis cannot be trusted with new writes right now; undefined while it can. */
export type RedisMemoryProblem =
  | { code: "redis_unavailable"; detail: string }
  | { code: "redis_eviction_policy"; detail: string }
  | { code: "redis_full"; detail: string };

const RISK_LEVEL = { none: 0, volatile: 1, any: 2 } as const;

/**
 * Reads every Redis master's maxmemory-policy and memory use (INFO memory) when the client connects and
 * every `intervalMs` after, and tells readiness what it found: nothing read yet, a policy that may evict
 * accepted increments, or a Redis too full to take writes. A reading at the limit or a write refused for memory
 * (`noteOutOfMemory`) makes it full at once; it stays full until a reading shows clear room on every master.
 */
export class RedisMemoryWatch {
  readonly #options: RedisMemoryWatchOptions;
  #readings: RedisMemory[] = [];
  #checked = false;
  #full = false;
  #loggedUnsafe = new Set<string>();
  #loggedFull = false;
  readonly #reading: PeriodicReading;

  constructor(options: RedisMemoryWatchOptions) {
    this.#options = options;
    this.#reading = new PeriodicReading({
      redis: options.redis,
      intervalMs: options.intervalMs,
      read: () => this.#read(),
      logger: options.logger,
      refusedMessage: "cannot read Redis INFO memory: its eviction policy and memory use go unchecked",
      // Redis answered, but will not tell: ready, unchecked.
      onRefused: () => {
        this.#checked = true;
      },
    });
  }

  start(): void {
    this.#reading.start();
  }

  stop(): void {
    this.#reading.stop();
  }

  /** A write was refused with OOM: Redis is full now, whatever the last reading said. */
  noteOutOfMemory(): void {
    this.#full = true;
    this.#logFull();
  }

  problem(): RedisMemoryProblem | undefined {
    if (!this.#checked) {
      return {
        code: "redis_unavailable",
        detail: "Redis' eviction policy and memory have not been read yet",
      };
    }
    const unsafe = this.#readings.filter((reading) => this.#refusesPolicy(reading));
    if (unsafe.length > 0) {
      return { code: "redis_eviction_policy", detail: unsafePolicyMessage(unsafe) };
    }
    if (this.#full) {
      return {
        code: "redis_full",
        detail: "Redis is at maxmemory and refuses writes until the syncer has moved a batch to Postgres",
      };
    }
    return undefined;
  }

  /** Reads every master now; a failed read keeps the last readings (Redis being down is reported elsewhere). */
  check(): Promise<void> {
    return this.#reading.now();
  }

  async #read(): Promise<void> {
    const readings = await readRedisMemory(this.#options.redis);
    this.#readings = readings;
    if (readings.some(isFull)) this.#full = true;
    else if (readings.every(hasRoomAgain)) this.#full = false;
    const firstReading = !this.#checked;
    this.#checked = true;
    this.#logPolicies(firstReading);
    this.#logFull();
  }

  /** Exports the readings: per master, memory used and its limit, and the risk of its eviction policy. */
  register(registry: Registry): void {
    const readings = () => this.#readings;
    registerMasterGauge(
      registry,
      {
        name: "tally_redis_memory_used_bytes",
        help: "Memory a Redis master weighs against its maxmemory, as last read (INFO memory)",
      },
      () => readings().map(({ node, usedBytes }) => ({ node, value: usedBytes })),
    );
    registerMasterGauge(
      registry,
      { name: "tally_redis_memory_max_bytes", help: "maxmemory of a Redis master (0: no limit)" },
      () => readings().map(({ node, maxBytes }) => ({ node, value: maxBytes })),
    );
    registerMasterGauge(
      registry,
      {
        name: "tally_redis_eviction_risk",
        help: "What a Redis master's maxmemory-policy may evict: 0 nothing (noeviction), 1 keys with a TTL (volatile-*: Idempotency-Key records), 2 any key, accepted increments included",
        withPolicy: true,
      },
      () => readings().map(({ node, policy }) => ({ node, policy, value: RISK_LEVEL[evictionRisk(policy)] })),
    );
  }

  #refusesPolicy(reading: RedisMemory): boolean {
    return evictionRisk(reading.policy) === "any" && !this.#options.allowEviction;
  }

  #logPolicies(firstReading: boolean): void {
    const { logger } = this.#options;
    const unsafe = this.#readings.filter((reading) => this.#refusesPolicy(reading));
    if (firstReading && unsafe.length > 0) {
      this.#options.onUnsafeAtStart(unsafePolicyMessage(unsafe));
      return;
    }
    // One line per node and policy it changes to, not one per reading.
    const current = new Set<string>();
    for (const reading of this.#readings) {
      const risk = evictionRisk(reading.policy);
      if (risk === "none") continue;
      const seen = `${reading.node} ${reading.policy}`;
      current.add(seen);
      if (this.#loggedUnsafe.has(seen)) continue;
      const context = { node: reading.node, policy: reading.policy };
      if (this.#refusesPolicy(reading)) {
        logger.error(context, `${unsafePolicyMessage([reading])}; not ready until it is changed`);
      } else if (risk === "any") {
        logger.warn(context, "REDIS_ALLOW_EVICTION=true: Redis may evict accepted increments, losing them");
      } else {
        logger.warn(
          context,
          "Redis may evict Idempotency-Key records under memory pressure: a retry whose record was evicted counts twice; noeviction keeps them",
        );
      }
    }
    this.#loggedUnsafe = current;
  }

  #logFull(): void {
    if (this.#full === this.#loggedFull) return;
    this.#loggedFull = this.#full;
    if (this.#full) {
      this.#options.logger.warn(
        "Redis is out of memory: new writes are refused (503 redis_full) until the syncer frees it",
      );
    } else {
      this.#options.logger.info("Redis has room again");
    }
  }
}

/** The watch a tally process runs, as configured: an unsafe policy at start stops the process. */
export function redisMemoryWatchFor(redis: RedisClient, config: Config, logger: Logger): RedisMemoryWatch {
  return new RedisMemoryWatch({
    redis,
    logger,
    intervalMs: config.redis.checkIntervalMs,
    allowEviction: config.redis.allowEviction,
    onUnsafeAtStart: (message) => exitForOperator(logger, message),
  });
}

function unsafePolicyMessage(readings: RedisMemory[]): string {
  const nodes = readings.map((reading) => `${reading.policy} on ${reading.node}`).join(", ");
  return (
    `Redis maxmemory-policy is ${nodes}: at maxmemory Redis may evict the hashes that hold accepted ` +
    "increments, losing them. Set maxmemory-policy to noeviction (or a volatile-* policy), or set " +
    "REDIS_ALLOW_EVICTION=true to run anyway"
  );
}
