import { hostname } from "node:os";
import type { Logger } from "../../lib/logger.ts";
import type { RedisClient } from "../../lib/redis/client.ts";
import type { Syncer } from "../syncer.ts";
import { type ActivityReport, ActivityTracker, type CycleData } from "./tracker.ts";
import type { WebhookSender } from "./webhook.ts";

export interface ActivityOptions {
  logger: Logger;
  redis: RedisClient;
  shards: number;
  intervalMs: number;
  /** The stream's key and cap; undefined writes no stream. */
  stream: { key: string; maxLen: number; trim?: "~" | "=" } | undefined;
  webhook?: WebhookSender | undefined;
  periodMs?: number;
  maxHoldMs?: number;
  now?: () => number;
}

/**
 * The tracker wired to its outputs: the log line, the stream entry (XADD … MAXLEN ~ cap) and the webhook.
 * It follows a syncer's events (`watch`). Nothing here is awaited by the syncer: the stream
 * writes are chained (one at a time, in order) and the webhook queues, so a slow Redis or receiver never
 * delays a cycle; every failure is logged and none escapes.
 */
export class Activity {
  readonly #options: ActivityOptions;
  readonly #tracker: ActivityTracker;
  readonly #now: () => number;
  /** Names the writer in every entry: two syncers may both report part of a minute across a failover. */
  readonly #syncerId = `${hostname()}:${process.pid}`;
  #streamWrites: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;

  constructor(options: ActivityOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#tracker = new ActivityTracker({
      shards: options.shards,
      intervalMs: options.intervalMs,
      logger: options.logger,
      periodMs: options.periodMs,
      maxHoldMs: options.maxHoldMs,
      now: this.#now,
      emit: (report) => this.#publish(report),
    });
  }

  /** Follows `syncer`'s applied batches and cycles. */
  watch(syncer: Pick<Syncer, "on">): void {
    syncer.on("batch-applied", (batch) => this.#guard(() => this.#tracker.recordBatch(batch)));
    syncer.on("cycle", (report) => this.observeCycle(report));
  }

  /** A cycle's report (`watch` passes every one; tests may pass their own). */
  observeCycle(report: CycleData): void {
    this.#guard(() => this.#tracker.observeCycle(report));
  }

  /** Starts the timer that reports held periods when no cycles come (this syncer is a standby). */
  start(): void {
    const periodMs = this.#options.periodMs ?? 60_000;
    this.#timer ??= setInterval(() => this.#guard(() => this.#tracker.expire()), Math.min(periodMs, 60_000));
    this.#timer.unref();
  }

  /**
   * Shutdown, after the syncer's last cycle: reports what is held, waits for the stream writes and gives the
   * webhook up to `webhookGraceMs` to deliver.
   */
  async stop(webhookGraceMs = 0): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#guard(() => this.#tracker.flush());
    await this.#streamWrites;
    await this.#options.webhook?.idle(webhookGraceMs);
  }

  /** Resolves when every stream entry emitted so far has been written (or failed and been logged). */
  streamWritten(): Promise<void> {
    return this.#streamWrites;
  }

  #publish(report: ActivityReport): void {
    const { logger, stream, webhook } = this.#options;
    const minute = report.minute.toISOString();
    const deltaTotal = report.deltaTotal.toString();
    const emittedAt = new Date(this.#now()).toISOString();
    logger.info(
      { minute, uniqueKeys: report.uniqueKeys, deltaTotal, batches: report.batches, partial: report.partial },
      "activity",
    );
    if (stream) {
      const { redis } = this.#options;
      const fields = [
        ["minute", minute],
        ["unique_keys", String(report.uniqueKeys)],
        ["delta_total", deltaTotal],
        ["batches", String(report.batches)],
        ["partial", String(report.partial)],
        ["emitted_at", emittedAt],
        ["syncer", this.#syncerId],
      ].flat();
      // MAXLEN ~: Redis trims whole radix-tree nodes only, far cheaper than an exact cap; the stream may
      // hold somewhat more than maxLen entries.
      this.#streamWrites = this.#streamWrites
        .then(() => redis.xadd(stream.key, "MAXLEN", stream.trim ?? "~", stream.maxLen, "*", ...fields))
        .then(
          () => {},
          (error: unknown) =>
            logger.warn({ err: error, minute, stream: stream.key }, "activity: stream write failed"),
        );
    }
    webhook?.send(
      {
        minute,
        uniqueKeys: report.uniqueKeys,
        deltaTotal,
        batches: report.batches,
        partial: report.partial,
        emittedAt,
        syncer: this.#syncerId,
      },
      { minute },
    );
  }

  /** A bug in the accounting must never break a sync cycle: log it and go on. */
  #guard(work: () => void): void {
    try {
      work();
    } catch (error) {
      this.#options.logger.error({ err: error }, "activity accounting failed");
    }
  }
}
