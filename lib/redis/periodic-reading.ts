import type { Logger } from "../logger.ts";
import type { RedisClient } from "./client.ts";
import { isRedisReply } from "./errors.ts";

export interface PeriodicReadingOptions {
  redis: RedisClient;
  intervalMs: number;
  /** One reading; its failure is handled here. */
  read: () => Promise<void>;
  logger: Logger;
  /** Said once, as a warning, when Redis refuses to tell (INFO renamed or denied). */
  refusedMessage: string;
  /** Told of a refusal every time: the watch may then act as if it had read. */
  onRefused?: () => void;
}

/**
 * Reads something of Redis (its settings, its replicas) when the client connects, every `intervalMs` after
 * and whenever asked, one reading at a time. A reading that fails because Redis cannot be reached keeps the
 * last ones (that Redis is down is its connection's to report); one Redis refuses is said once.
 */
export class PeriodicReading {
  readonly #options: PeriodicReadingOptions;
  #timer: NodeJS.Timeout | undefined;
  #reading: Promise<void> | undefined;
  #saidRefused = false;
  readonly #onReady = () => void this.now();

  constructor(options: PeriodicReadingOptions) {
    this.#options = options;
  }

  start(): void {
    const { redis, intervalMs } = this.#options;
    redis.on("ready", this.#onReady);
    if (redis.status === "ready") void this.now();
    this.#timer = setInterval(() => void this.now(), intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#options.redis.off("ready", this.#onReady);
  }

  /** Reads now, or joins the reading under way. */
  now(): Promise<void> {
    this.#reading ??= this.#read().finally(() => {
      this.#reading = undefined;
    });
    return this.#reading;
  }

  async #read(): Promise<void> {
    try {
      await this.#options.read();
    } catch (error) {
      if (!isRedisReply(error)) return;
      this.#options.onRefused?.();
      if (this.#saidRefused) return;
      this.#saidRefused = true;
      this.#options.logger.warn({ err: error }, this.#options.refusedMessage);
    }
  }
}
