import { hostname } from "node:os";
import type { Logger } from "../lib/logger.ts";
import type { RedisClient } from "../lib/redis/client.ts";
import type { Batch } from "./apply.ts";
import type { WebhookSender } from "./webhook.ts";

/**
 * Per-minute activity: how many distinct keys the syncer applied in a minute and the sum of their deltas,
 * reported once the minute is over to the log, a Redis stream and optionally a webhook.
 *
 * Attribution. A batch counts in the minute of its swap time. The swap time is the batch's identity in time
 * (the ledger records it, every syncer agrees on it, it does not move when the apply is slow or retried),
 * and it is what the staleness bound is measured against. The price: a batch swapped at 12:01:02 holds the
 * increments accepted since the previous swap (12:00:57 … 12:01:02), so minute edges are blurred by up to
 * one SYNC_INTERVAL_MS. Keys whose increments cancel out within one batch are not in it, so not counted.
 *
 * When a minute is reported. Once every shard is known to be synced past the minute's end (a committed batch
 * swapped, or an idle shard observed, at or after it), every batch swapped in the minute has been committed:
 * the numbers are final. In normal operation that is the end of the first cycle after the minute, without
 * any guess of a grace period; a batch swapped at 12:00:58 and committed at 12:01:01 is counted in 12:00.
 * A minute that cannot be confirmed (Postgres down, a shard failing, the lease lost) is reported anyway
 * `maxHoldMs` after its end, marked partial, so memory stays bounded; a batch of that minute committed
 * later is left out and logged.
 *
 * Partial. Only the leader sees data, and only what it applied itself. `partial: true` says this syncer may
 * not have applied every batch of the minute: it started or became leader during the minute (or after it,
 * for a leftover batch it finished), it missed cycles (lost the lease; detected as a gap in its schedule),
 * another syncer committed a batch of the minute (a batch already in the ledger, a superseded batch, or a
 * gap in a shard's batch seq), or the minute could not be confirmed complete (above). Across a failover the
 * entries of both syncers for the same minute can be added up for `delta_total` and `batches` (each batch is
 * applied, so counted, by exactly one syncer; a batch left out as late, above, is logged instead);
 * `unique_keys` cannot be added (a key may be in both).
 * While this syncer leads, a minute without increments is reported with zeros, so dashboards see a line;
 * a standby has nothing to report (a syncer that lost the lease reports what it held, as partial).
 *
 * Cost. The distinct keys are counted exactly, in a Set per minute: about 35 bytes per distinct key, plus the
 * key strings it keeps alive until the minute is reported (measured: ~75 MB for a minute of 10,000 new keys
 * per second, 20-character keys), and ~0.25 s of CPU per million keys added, in the cycle after the commit.
 */

export interface ActivityReport {
  /** Start of the minute (of the period, in tests). */
  minute: Date;
  /** Distinct keys with a non-zero delta in the batches of the minute this syncer applied. */
  uniqueKeys: number;
  /** Sum of those deltas; exact (BigInt): it may exceed 2^53. */
  deltaTotal: bigint;
  /** Batches of the minute this syncer applied. */
  batches: number;
  /** This syncer may not have applied every batch of the minute (see above). */
  partial: boolean;
}

export interface ActivityTrackerOptions {
  shards: number;
  /** SYNC_INTERVAL_MS: how far apart the leader's cycles are, to tell a missed cycle. */
  intervalMs: number;
  emit: (report: ActivityReport) => void;
  logger: Logger;
  /** The reporting period: a minute. Tests shorten it to see several periods in seconds. */
  periodMs?: number;
  /** How long after its end an unconfirmed period is held before it is reported as partial. */
  maxHoldMs?: number;
  /** The clock (epoch ms) for holding periods; injected by tests. Batch and cycle times come with them. */
  now?: () => number;
}

interface Period {
  start: number;
  end: number;
  /** Exact distinct keys: the strings are the batches' own (a reference each, not a copy of the text). */
  keys: Set<string>;
  deltaTotal: bigint;
  batches: number;
  partial: boolean;
}

type BatchData = Pick<Batch, "swappedAt" | "keys" | "deltas">;

/** What the tracker reads of a CycleReport (any CycleReport is one): no more, so tests can build them. */
export interface CycleData {
  startedAt: Date;
  durationMs: number;
  outcomes: readonly (
    | { kind: "idle"; shard: number; observedAt: Date }
    | { kind: "batch"; shard: number; seq: bigint; swappedAt: Date; applied: boolean }
    | { kind: "superseded"; shard: number }
  )[];
}

/** The accounting, without any output: fed applied batches and cycle reports, it emits finished periods. */
export class ActivityTracker {
  readonly #options: ActivityTrackerOptions;
  readonly #periodMs: number;
  readonly #maxHoldMs: number;
  readonly #now: () => number;
  /** Periods not yet reported, by start. */
  readonly #periods = new Map<number, Period>();
  /** Everything before this has been reported: a batch of such a period arrived too late. */
  #reportedThrough = Number.NEGATIVE_INFINITY;
  /** Since when this syncer has run every cycle (led without a break); undefined before its first cycle. */
  #coveredSince: number | undefined;
  #lastCycle: { startedAt: number; endedAt: number } | undefined;
  /** Per shard: every batch swapped before this time is committed (by someone). */
  readonly #syncedThrough = new Map<number, number>();
  /** Per shard: the seq and swap time of the last batch seen, to notice a batch someone else applied. */
  readonly #lastBatch = new Map<number, { seq: bigint; swappedAt: number }>();

  constructor(options: ActivityTrackerOptions) {
    this.#options = options;
    this.#periodMs = options.periodMs ?? 60_000;
    this.#maxHoldMs = options.maxHoldMs ?? 2 * this.#periodMs;
    this.#now = options.now ?? Date.now;
  }

  /** A batch this syncer committed (called right after the commit, before the cycle's report). */
  recordBatch(batch: BatchData): void {
    const at = batch.swappedAt.getTime();
    const start = this.#startOf(at);
    if (start < this.#reportedThrough) {
      this.#options.logger.warn(
        { minute: new Date(start).toISOString(), keys: batch.keys.length, swappedAt: batch.swappedAt },
        "activity: batch committed after its minute was reported; not counted",
      );
      return;
    }
    const period = this.#period(start);
    for (const key of batch.keys) period.keys.add(key);
    period.deltaTotal += sumDeltas(batch.deltas);
    period.batches += 1;
  }

  /** The end of a cycle: what it says about completeness and coverage, then the periods now due. */
  observeCycle(report: CycleData): void {
    const startedAt = report.startedAt.getTime();
    const endedAt = startedAt + report.durationMs;
    const last = this.#lastCycle;
    // A leader's next cycle starts by max(previous start + interval, previous end) (fixed rate; an overrun
    // is followed at once). A cycle skipped because the lease was not held makes the next one at least a
    // whole interval later than that, so more than 3/4 of an interval late means missed cycles (a timer
    // firing late under load stays well below it): another syncer may have applied batches meanwhile.
    if (
      last &&
      startedAt - Math.max(last.startedAt + this.#options.intervalMs, last.endedAt) >
        this.#options.intervalMs * 0.75
    ) {
      this.#markPartial(last.endedAt, startedAt);
      this.#coveredSince = startedAt;
    }
    this.#coveredSince ??= startedAt;
    this.#lastCycle = { startedAt, endedAt };
    // While leading, every period gets an entry, zeros included. Created before the outcomes are read, so
    // that what they say (partial) lands on them.
    const from = Math.max(this.#startOf(this.#coveredSince), this.#reportedThrough);
    for (let start = from; start <= this.#startOf(endedAt); start += this.#periodMs) this.#period(start);

    for (const outcome of report.outcomes) {
      if (outcome.kind === "idle") {
        this.#advance(outcome.shard, outcome.observedAt.getTime());
      } else if (outcome.kind === "batch") {
        const swappedAt = outcome.swappedAt.getTime();
        this.#advance(outcome.shard, swappedAt);
        // Not applied here: another syncer committed it, its keys are not in our count.
        if (!outcome.applied) this.#markPartial(swappedAt, swappedAt + 1);
        const previous = this.#lastBatch.get(outcome.shard);
        // A seq skipped: batches between the two were swapped and applied by another syncer.
        if (previous && outcome.seq > previous.seq + 1n) this.#markPartial(previous.swappedAt, swappedAt);
        if (!previous || outcome.seq > previous.seq)
          this.#lastBatch.set(outcome.shard, { seq: outcome.seq, swappedAt });
      } else {
        // Superseded: another syncer finished a batch we had started; when it was swapped is not known.
        this.#markPartial(Number.NEGATIVE_INFINITY, endedAt);
      }
    }

    this.#emitDue(false);
  }

  /** Reports periods held past `maxHoldMs` (for when no cycles run: this syncer lost the lease). */
  expire(): void {
    this.#emitDue(false);
  }

  /** Reports everything held, the unfinished period included, as partial where unconfirmed (shutdown). */
  flush(): void {
    this.#emitDue(true);
  }

  #startOf(at: number): number {
    return Math.floor(at / this.#periodMs) * this.#periodMs;
  }

  #period(start: number): Period {
    let period = this.#periods.get(start);
    if (!period) {
      period = {
        start,
        end: start + this.#periodMs,
        keys: new Set(),
        deltaTotal: 0n,
        batches: 0,
        // Began before this syncer's unbroken run of cycles (or before its first cycle ended).
        partial: this.#coveredSince === undefined || start < this.#coveredSince,
      };
      this.#periods.set(start, period);
    }
    return period;
  }

  /** Marks the held periods that overlap [from, to) as partial. */
  #markPartial(from: number, to: number): void {
    for (const period of this.#periods.values()) {
      if (period.start < to && period.end > from) period.partial = true;
    }
  }

  #advance(shard: number, through: number): void {
    if (through > (this.#syncedThrough.get(shard) ?? Number.NEGATIVE_INFINITY))
      this.#syncedThrough.set(shard, through);
  }

  /** Every batch swapped before the returned time has been committed, in every shard. */
  #completeThrough(): number {
    let through = Number.POSITIVE_INFINITY;
    for (let shard = 0; shard < this.#options.shards; shard++) {
      through = Math.min(through, this.#syncedThrough.get(shard) ?? Number.NEGATIVE_INFINITY);
    }
    return through;
  }

  #emitDue(force: boolean): void {
    const completeThrough = this.#completeThrough();
    const now = this.#now();
    // In order: completeness and expiry both move forward in time, so a period is never reported before an
    // earlier one, and #reportedThrough only grows.
    for (const start of [...this.#periods.keys()].sort((a, b) => a - b)) {
      const period = this.#periods.get(start);
      if (!period) continue;
      const complete = period.end <= completeThrough;
      if (!complete && !force && now - period.end <= this.#maxHoldMs) break;
      this.#periods.delete(start);
      this.#reportedThrough = period.end;
      this.#options.emit({
        minute: new Date(period.start),
        uniqueKeys: period.keys.size,
        deltaTotal: period.deltaTotal,
        batches: period.batches,
        partial: period.partial || !complete,
      });
    }
  }
}

/** Exact sum of decimal int64 deltas. */
export function sumDeltas(deltas: readonly string[]): bigint {
  // Most deltas are small: add those as doubles (exact while the running sum stays below 2^53) and fold
  // the running sum into the BigInt now and then; parsing every delta as a BigInt costs ~3x more.
  let total = 0n;
  let small = 0;
  for (const delta of deltas) {
    // At most 15 digits: |delta| < 10^15 < 2^50, so `small` (kept below 2^52) + delta is still exact.
    if (delta.length <= 15) {
      small += Number(delta);
      if (small > 2 ** 52 || small < -(2 ** 52)) {
        total += BigInt(small);
        small = 0;
      }
    } else {
      total += BigInt(delta);
    }
  }
  return total + BigInt(small);
}

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
 * `onBatchApplied` and `onCycle` are the syncer's hooks. Nothing here is awaited by the syncer: the stream
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

  readonly onBatchApplied = (batch: Batch): void => {
    this.#guard(() => this.#tracker.recordBatch(batch));
  };

  readonly onCycle = (report: CycleData): void => {
    this.#guard(() => this.#tracker.observeCycle(report));
  };

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
