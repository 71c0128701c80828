import { describe, expect, it } from "vitest";
import {
  type ActivityReport,
  ActivityTracker,
  type CycleData,
  sumDeltas,
} from "../../syncer/activity/tracker.ts";
import { captureLogger } from "../support/logger.ts";

// The accounting alone, on a fake clock: batches and cycle reports shaped exactly as the syncer produces
// them, at times the test chooses, so minute edges, failovers and outages can be placed to the millisecond.

const MINUTE = 60_000;
const INTERVAL = 5_000;
/** 12:00:00.000 UTC, a minute boundary. */
const T0 = Date.parse("2026-11-21T12:00:00.000Z");
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

interface BatchSpec {
  shard?: number;
  /** [key, delta] as the batch holds them: one entry per key (the flushing hash summed the increments). */
  entries: [string, bigint][];
  /** False: another syncer had committed it already (the ledger refused it). */
  applied?: boolean;
  /** Skip seqs before this batch (another syncer took them). */
  seqJump?: number;
  /** A leftover batch, resumed: swapped earlier than this cycle. */
  swappedAt?: number;
}

/** Drives an ActivityTracker the way one syncer's cycles do, with a clock the test moves. */
class FakeSyncer {
  clock = T0;
  readonly reports: ActivityReport[] = [];
  readonly log = captureLogger();
  readonly tracker: ActivityTracker;
  readonly #seq = new Map<number, bigint>();

  constructor(readonly shards = 1) {
    this.tracker = new ActivityTracker({
      shards,
      intervalMs: INTERVAL,
      logger: this.log.logger,
      now: () => this.clock,
      emit: (report) => this.reports.push(report),
    });
  }

  /**
   * One cycle starting at `at`: every batch is swapped at `at` unless it says otherwise, applied ones are
   * recorded as they commit; a shard without a batch is idle, unless listed in `failing` (no outcome at all,
   * as when its flush throws). The cycle takes `durationMs`.
   */
  cycle(
    at: number,
    batches: BatchSpec[] = [],
    options: { durationMs?: number; failing?: number[]; held?: number[] } = {},
  ) {
    const durationMs = options.durationMs ?? 20;
    this.clock = at;
    const outcomes: CycleData["outcomes"][number][] = [];
    const failing = new Set(options.failing ?? []);
    const held = options.held ?? Array.from({ length: this.shards }, (_, shard) => shard);
    for (const shard of held) {
      if (failing.has(shard)) continue;
      const specs = batches.filter((spec) => (spec.shard ?? 0) === shard);
      if (specs.length === 0) outcomes.push({ kind: "idle", shard, observedAt: new Date(at) });
      for (const batch of specs) {
        const seq = (this.#seq.get(shard) ?? 0n) + 1n + BigInt(batch.seqJump ?? 0);
        this.#seq.set(shard, seq);
        const swappedAt = new Date(batch.swappedAt ?? at);
        const applied = batch.applied ?? true;
        if (applied) {
          this.tracker.recordBatch({
            swappedAt,
            keys: batch.entries.map(([key]) => key),
            deltas: batch.entries.map(([, delta]) => delta.toString()),
          });
        }
        outcomes.push({ kind: "batch", shard, seq, swappedAt, applied });
      }
    }
    this.clock = at + durationMs;
    this.tracker.observeCycle({
      startedAt: new Date(at),
      durationMs,
      outcomes,
      ...(options.held ? { shards: options.held } : {}),
    });
  }

  /** Idle cycles every INTERVAL from `from` (inclusive) to `to` (exclusive). */
  idleUntil(from: number, to: number): void {
    for (let at = from; at < to; at += INTERVAL) this.cycle(at);
  }

  reportFor(minute: number): ActivityReport | undefined {
    return this.reports.find((report) => report.minute.getTime() === minute);
  }
}

function at(minute: number, second: number, ms = 0): number {
  return T0 + minute * MINUTE + second * 1_000 + ms;
}

describe("ActivityTracker", () => {
  it("counts each minute's distinct keys once and sums its deltas exactly, two minutes apart", () => {
    const syncer = new FakeSyncer();
    // Leading since before 12:00, so 12:00 and 12:01 are seen whole.
    syncer.idleUntil(at(-1, 50), at(0, 5));
    syncer.cycle(at(0, 5), [
      {
        entries: [
          ["a", 1n],
          ["b", -7n],
          ["big", MAX_SAFE],
        ],
      },
    ]);
    syncer.cycle(at(0, 10));
    // "a" and "big" again in the same minute: still one key each; their deltas add up.
    syncer.cycle(at(0, 15), [
      {
        entries: [
          ["a", 4n],
          ["big", MAX_SAFE],
          ["c", -(MAX_SAFE + 10n)],
        ],
      },
    ]);
    syncer.idleUntil(at(0, 20), at(0, 58));
    // Swapped at 12:00:58, committed at 12:01:01 (a slow cycle): still 12:00's.
    syncer.cycle(at(0, 58), [{ entries: [["late-in-minute", 3n]] }], { durationMs: 3_000 });
    expect(syncer.reportFor(T0)).toBeUndefined();
    // 12:01: "a" again (a new minute counts it again), a key whose total leaves 2^63.
    syncer.cycle(at(1, 3), [
      {
        entries: [
          ["a", 2n],
          ["huge", 2n ** 62n],
        ],
      },
    ]);
    // The first cycle swapped after 12:01:00 confirms that everything of 12:00 is committed.
    expect(syncer.reportFor(T0)).toEqual({
      minute: new Date(T0),
      uniqueKeys: 5,
      deltaTotal: 1n - 7n + MAX_SAFE + 4n + MAX_SAFE - (MAX_SAFE + 10n) + 3n,
      batches: 3,
      partial: false,
    });
    syncer.idleUntil(at(1, 8), at(1, 40));
    syncer.cycle(at(1, 40), [{ entries: [["huge", 2n ** 62n]] }]);
    syncer.idleUntil(at(1, 45), at(2, 10));

    expect(syncer.reportFor(at(1, 0))).toEqual({
      minute: new Date(at(1, 0)),
      uniqueKeys: 2,
      deltaTotal: 2n + 2n ** 63n,
      batches: 2,
      partial: false,
    });
    // 11:59 (joined at 11:59:50: partial), 12:00, 12:01, each exactly once, in order.
    expect(syncer.reports.map((report) => [report.minute.toISOString(), report.partial])).toEqual([
      ["2026-11-21T11:59:00.000Z", true],
      ["2026-11-21T12:00:00.000Z", false],
      ["2026-11-21T12:01:00.000Z", false],
    ]);

    // More cycles, and finally the shutdown flush: 12:01 never comes again, 12:02 (unfinished) is partial.
    syncer.idleUntil(at(2, 10), at(2, 30));
    syncer.tracker.flush();
    syncer.tracker.flush();
    expect(syncer.reports.map((report) => [report.minute.toISOString(), report.partial])).toEqual([
      ["2026-11-21T11:59:00.000Z", true],
      ["2026-11-21T12:00:00.000Z", false],
      ["2026-11-21T12:01:00.000Z", false],
      ["2026-11-21T12:02:00.000Z", true],
    ]);
  });

  it("adds a key's deltas across shards and batches, and reports a quiet minute as zeros", () => {
    const syncer = new FakeSyncer(3);
    syncer.idleUntil(at(-1, 55), at(0, 5));
    syncer.cycle(at(0, 5), [
      { shard: 0, entries: [["k", 5n]] },
      { shard: 2, entries: [["k", -(2n ** 60n)]] },
    ]);
    syncer.cycle(at(0, 10), [{ shard: 1, entries: [["k", 1n]] }]);
    // 12:01 passes without a single increment.
    syncer.idleUntil(at(0, 15), at(2, 5));

    expect(syncer.reportFor(T0)).toMatchObject({ uniqueKeys: 1, deltaTotal: 6n - 2n ** 60n, batches: 3 });
    expect(syncer.reportFor(at(1, 0))).toEqual({
      minute: new Date(at(1, 0)),
      uniqueKeys: 0,
      deltaTotal: 0n,
      batches: 0,
      partial: false,
    });
  });

  it("waits for a failing shard, then reports the minute complete when it catches up", () => {
    const syncer = new FakeSyncer(2);
    syncer.idleUntil(at(-1, 55), at(0, 50));
    syncer.cycle(at(0, 50), [
      { shard: 0, entries: [["x", 1n]] },
      { shard: 1, entries: [["y", 2n]] },
    ]);
    // Shard 1 fails from 12:00:55 to 12:01:30 (Postgres trouble): 12:00 cannot be confirmed.
    for (let second = 55; second < 90; second += 5) syncer.cycle(at(0, second), [], { failing: [1] });
    expect(syncer.reportFor(T0)).toBeUndefined();
    // It recovers: its batch, swapped at 12:00:55 and retried since, commits with that swap time; then the
    // dirty hash behind it is swapped and flushed in the same cycle (12:01's).
    syncer.cycle(at(1, 30), [
      { shard: 1, swappedAt: at(0, 55), entries: [["y", 4n]] },
      { shard: 1, entries: [["z", 3n]] },
    ]);

    expect(syncer.reportFor(T0)).toEqual({
      minute: new Date(T0),
      uniqueKeys: 2,
      deltaTotal: 1n + 2n + 4n,
      batches: 3,
      partial: false,
    });
  });

  it("reports an unconfirmable minute as partial after the hold, and leaves out a batch that comes later", () => {
    const syncer = new FakeSyncer(1);
    syncer.idleUntil(at(-1, 55), at(0, 10));
    syncer.cycle(at(0, 10), [{ entries: [["a", 1n]] }]);
    // The shard fails from 12:00:15 on (its batch swapped at 12:00:15 cannot be applied): nothing more is
    // confirmed.
    for (let t = at(0, 15); t < at(3, 5); t += INTERVAL) syncer.cycle(t, [], { failing: [0] });
    // Held until two minutes after its end (12:03:00), then reported as partial.
    expect(syncer.reportFor(T0)).toEqual({
      minute: new Date(T0),
      uniqueKeys: 1,
      deltaTotal: 1n,
      batches: 1,
      partial: true,
    });
    expect(syncer.reportFor(at(1, 0))).toBeUndefined();
    // The stuck batch finally commits: its minute is gone, so it is logged, not counted. Everything accepted
    // meanwhile was in the dirty hash behind it, swapped now: 12:01 and 12:02 had no batch at all.
    syncer.cycle(at(3, 5), [{ swappedAt: at(0, 15), entries: [["b", 9n]] }, { entries: [["c", 1n]] }]);

    expect(syncer.reports.filter((report) => report.minute.getTime() === T0)).toHaveLength(1);
    expect(syncer.log.lines).toContainEqual(
      expect.objectContaining({
        level: "warn",
        msg: "activity: batch committed after its minute was reported; not counted",
        minute: "2026-11-21T12:00:00.000Z",
        keys: 1,
      }),
    );
    // 12:01 and 12:02 are confirmed now that the shard is synced past them.
    expect(syncer.reportFor(at(1, 0))).toMatchObject({ batches: 0, partial: false });
    expect(syncer.reportFor(at(2, 0))).toMatchObject({ batches: 0, partial: false });
  });

  it("marks partial the minutes it joined late, missed cycles in, or shared with another syncer", () => {
    const syncer = new FakeSyncer(1);
    // Takes its shard at 12:00:30: 12:00 is partial, 12:01 is whole.
    syncer.idleUntil(at(0, 30), at(0, 40));
    syncer.cycle(at(0, 40), [{ entries: [["a", 1n]] }]);
    syncer.idleUntil(at(0, 45), at(2, 0));
    // Loses the lease from 12:02:10 to 12:02:40 (no cycles): 12:02 is partial.
    syncer.idleUntil(at(2, 0), at(2, 10));
    syncer.idleUntil(at(2, 40), at(3, 0));
    // 12:03: a batch another syncer already committed (the ledger had it).
    syncer.cycle(at(3, 0), [{ entries: [["b", 1n]], applied: false }]);
    syncer.idleUntil(at(3, 5), at(4, 0));
    // 12:04: a seq skipped: another syncer swapped and applied a batch between two of ours.
    syncer.cycle(at(4, 0), [{ entries: [["c", 1n]] }]);
    syncer.cycle(at(4, 5), [{ entries: [["d", 1n]], seqJump: 1 }]);
    syncer.idleUntil(at(4, 10), at(5, 5));

    expect(
      syncer.reports.map((report) => [report.minute.toISOString().slice(11, 16), report.partial]),
    ).toEqual([
      ["12:00", true],
      ["12:01", false],
      ["12:02", true],
      ["12:03", true],
      ["12:04", true],
    ]);
    // Its own batches are counted whatever the flag.
    expect(syncer.reportFor(at(4, 0))).toMatchObject({ uniqueKeys: 2, batches: 2 });
    expect(syncer.reportFor(at(3, 0))).toMatchObject({ uniqueKeys: 0, batches: 0 });
  });

  it("holding half of the shards: reports its share of each minute as partial, as soon as its shards are synced", () => {
    const syncer = new FakeSyncer(4);
    for (let t = at(-1, 50); t < at(1, 5); t += INTERVAL) {
      const batches: BatchSpec[] =
        t === at(0, 10)
          ? [
              { shard: 0, entries: [["a", 2n]] },
              { shard: 1, entries: [["b", 3n]] },
            ]
          : [];
      syncer.cycle(t, batches, { held: [0, 1] });
    }
    // Shards 2 and 3 are another syncer's: the minute is due once 0 and 1 are synced past it, not after the
    // two-minute hold.
    expect(syncer.reportFor(at(0, 0))).toEqual({
      minute: new Date(at(0, 0)),
      uniqueKeys: 2,
      deltaTotal: 5n,
      batches: 2,
      partial: true,
    });
  });

  it("a standby that lost the lease reports what it held once the hold has passed, from its timer", () => {
    const syncer = new FakeSyncer(1);
    syncer.idleUntil(at(-1, 55), at(0, 10));
    syncer.cycle(at(0, 10), [{ entries: [["a", 5n]] }]);
    // No more cycles: the lease went to another syncer.
    syncer.clock = at(2, 30);
    syncer.tracker.expire();
    expect(syncer.reports).toEqual([expect.objectContaining({ minute: new Date(at(-1, 0)) })]);

    syncer.clock = at(3, 1);
    syncer.tracker.expire();
    expect(syncer.reportFor(T0)).toEqual({
      minute: new Date(T0),
      uniqueKeys: 1,
      deltaTotal: 5n,
      batches: 1,
      partial: true,
    });
  });
});

describe("sumDeltas", () => {
  it("is exact for every magnitude and sign, including sums past 2^53 from small deltas", () => {
    const int64Max = 2n ** 63n - 1n;
    const int64Min = -(2n ** 63n);
    const cases: bigint[][] = [
      [],
      [0n],
      [1n, -1n, 5n],
      [MAX_SAFE, MAX_SAFE, 1n],
      [int64Max, int64Min, -1n],
      [-(10n ** 15n - 1n), 10n ** 15n, 999_999_999_999_999n],
      // 10,000 deltas of 10^15 - 1 (15 digits, the double path): the running sum passes 2^53 many times.
      Array.from({ length: 10_000 }, () => 10n ** 15n - 1n),
      Array.from({ length: 10_000 }, (_, i) => (i % 2 === 0 ? -(10n ** 15n - 1n) : 3n)),
    ];
    for (const deltas of cases) {
      const expected = deltas.reduce((sum, delta) => sum + delta, 0n);
      expect(sumDeltas(deltas.map(String))).toBe(expected);
    }
  });
});
