import type { Logger } from "../../lib/logger.ts";
import type { Batch } from "../batch.ts";

/*
 * The accounting behind the per-minute activity report (docs/operations.md, "Per-minute activity"), in
 * short:
 * - A batch counts in the minute of its swap time: the batch's identity in time, the one every syncer and
 *   the ledger agree on, and what staleness is measured against. Minute edges blur by one SYNC_INTERVAL_MS.
 * - A minute is reported once every shard is known to be synced past its end, so its numbers are final,
 *   with no guessed grace period; one that cannot be confirmed is reported `maxHoldMs` after its end as
 *   partial, so memory stays bounded, and a batch of it committed later is logged instead.
 * - `partial` says this syncer may not have applied every batch of the minute (it started or took shards in
 *   it, missed cycles, held only some of the shards, or saw another syncer's batch as a gap in a shard's
 *   seq). Each batch is applied by exactly one syncer, so partial entries of one minute add up; their
 *   distinct keys add up too where the syncers held different shards (shards are key-disjoint).
 * - Distinct keys are counted exactly, in a Set per minute that keeps the batches' key strings alive until
 *   the minute is reported.
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
  /** SYNC_INTERVAL_MS: how far apart a syncer's cycles are, to tell a missed cycle. */
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
  /** The shards the cycle covered (the ones this syncer holds); every shard when absent. */
  shards?: readonly number[];
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
  /** The shards of the last cycle: this syncer's share, whose completeness its reports wait for. */
  #covered: readonly number[] | undefined;
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
    // A syncer's next cycle starts by max(previous start + interval, previous end) (fixed rate; an overrun
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
    const previousEnd = last?.endedAt ?? startedAt;
    this.#lastCycle = { startedAt, endedAt };
    this.#covered = report.shards;
    // While leading, every period gets an entry, zeros included. Created before the outcomes are read, so
    // that what they say (partial) lands on them.
    const from = Math.max(this.#startOf(this.#coveredSince), this.#reportedThrough);
    for (let start = from; start <= this.#startOf(endedAt); start += this.#periodMs) this.#period(start);
    // Syncers sharing the shards: each reports its share of a minute, the others' batches are not in it.
    if (report.shards !== undefined && report.shards.length < this.#options.shards) {
      this.#markPartial(previousEnd, endedAt);
    }

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

  /** Every batch swapped before the returned time has been committed, in every shard this syncer covers. */
  #completeThrough(): number {
    const shards = this.#covered ?? Array.from({ length: this.#options.shards }, (_, shard) => shard);
    let through = Number.POSITIVE_INFINITY;
    for (const shard of shards) {
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
