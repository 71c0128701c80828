import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it, onTestFinished } from "vitest";
import type { RedisClient } from "../../lib/redis/client.ts";
import type { StepHook } from "../../syncer/flush-context.ts";
import type { BatchOutcome } from "../../syncer/flush-shard.ts";
import type { CycleReport, Syncer } from "../../syncer/syncer.ts";
import {
  addDeltas,
  createSyncer,
  drain,
  expectDelta,
  nonZero,
  randomInt,
  readCounters,
  readLedger,
  useSyncerEnv,
} from "../support/syncer.ts";

// The spec's hardest promise: correctness must not depend on the lease. Several syncers flush the same
// shards at once while a writer keeps incrementing; afterwards Postgres must equal the writer's own tally.

const KEYS = 300;
const SHARDS = 2;
const WRITE_ROUNDS = 120;
const MAX_WRITE_ROUNDS = 5_000;
const WRITES_PER_ROUND = 60;
const SCAN_COUNT = 40;

const env = useSyncerEnv();

/**
 * Increments random keys in random shards, the hardest case for concurrent syncers, and counts a delta as
 * expected only once Redis acknowledged it. Mostly small deltas of both signs, now and then one beyond 2^53.
 */
async function runWriter(
  redis: RedisClient,
  prefix: string,
  expected: Map<string, bigint>,
  keepGoing: () => boolean = () => false,
): Promise<void> {
  // Writing on while `keepGoing` says the scenario under test has not happened often enough yet.
  for (let round = 0; round < WRITE_ROUNDS || (keepGoing() && round < MAX_WRITE_ROUNDS); round++) {
    const byShard = new Map<number, [string, bigint][]>();
    for (let i = 0; i < WRITES_PER_ROUND; i++) {
      const index = randomInt(0, KEYS - 1);
      const delta =
        Math.random() < 0.01 ? 2n ** 54n + BigInt(randomInt(0, 1_000)) : BigInt(randomInt(-1_000, 1_000));
      // Any shard, as an Idempotency-Key (the shard of its record) or a changed SYNC_SHARDS can make it: one
      // key's deltas then sit in several shards, whose batches concurrent syncers upsert at once, row locks
      // and all.
      const shard = randomInt(0, SHARDS - 1);
      const writes = byShard.get(shard) ?? [];
      writes.push([`key-${index}`, delta]);
      byShard.set(shard, writes);
    }
    for (const [shard, writes] of byShard) {
      await addDeltas(redis, prefix, writes, shard);
      for (const [key, delta] of writes) expectDelta(expected, key, delta);
    }
    await sleep(randomInt(0, 4));
  }
}

/** Small random pauses between steps make the syncers' steps interleave in many different orders. */
const jitter: StepHook = async (step) => {
  if (step === "after-swap" || step === "during-read" || step === "before-commit")
    await sleep(randomInt(0, 5));
};

function tally(outcomes: BatchOutcome[]) {
  const count = (match: (outcome: BatchOutcome) => boolean) => outcomes.filter(match).length;
  return {
    applied: count((outcome) => outcome.kind === "batch" && outcome.applied),
    resumed: count((outcome) => outcome.kind === "batch" && outcome.resumed),
    refusedByLedger: count((outcome) => outcome.kind === "batch" && !outcome.applied),
    superseded: count((outcome) => outcome.kind === "superseded"),
  };
}

async function expectExactTotals(expected: Map<string, bigint>): Promise<void> {
  const rows = await readCounters(env.pool);
  // A key that nets to zero within one batch creates no row, but one that nets to zero across batches
  // (+5, then -5 in a later batch) keeps its row at 0: compare the non-zero totals, and allow only rows for
  // keys the writer touched.
  expect(nonZero(rows)).toEqual(nonZero(expected));
  expect([...rows.keys()].filter((key) => !expected.has(key))).toEqual([]);
  // Every committed delta is in exactly one ledger row: the ledger sums to what was written.
  const ledgerSum = (await readLedger(env.pool)).reduce((sum, row) => sum + BigInt(row.delta_sum), 0n);
  expect(ledgerSum).toBe([...expected.values()].reduce((sum, value) => sum + value, 0n));
}

describe("several syncers on the same shards", () => {
  it.each([2, 3])(
    "%i syncers cycling at once, bypassing the lease, count every delta exactly once",
    async (count) => {
      const prefix = env.newPrefix();
      const syncers: Syncer[] = [];
      for (let i = 0; i < count; i++) {
        syncers.push(
          createSyncer({
            redis: await env.openRedis(),
            pool: env.openPool(),
            prefix,
            shards: SHARDS,
            intervalMs: 20,
            scanCount: SCAN_COUNT,
            onStep: jitter,
          }),
        );
      }
      const expected = new Map<string, bigint>();
      const reports: CycleReport[] = [];
      let writing = true;
      const loops = syncers.map(async (syncer) => {
        while (writing) {
          reports.push(await syncer.runCycle());
          await sleep(randomInt(0, 20));
        }
      });

      // The syncers overlap by chance: the writer goes on until one of them has found another's batch still
      // flushing, so that the proof below never depends on how the scheduler happened to interleave them.
      const resumedOnce = () =>
        reports.some((report) =>
          report.outcomes.some((outcome) => outcome.kind === "batch" && outcome.resumed),
        );
      await runWriter(env.redis, prefix, expected, () => !resumedOnce());
      writing = false;
      await Promise.all(loops);
      const [first] = syncers;
      if (!first) throw new Error("no syncer");
      await drain(first, env.redis, prefix, SHARDS);

      await expectExactTotals(expected);
      // Racing syncers are not failures: the ledger and the batch ids sort them out without an error.
      expect(reports.flatMap((report) => report.failures)).toEqual([]);
      const outcomes = tally(reports.flatMap((report) => report.outcomes));
      expect(outcomes.applied).toBeGreaterThan(0);
      // Proof that the syncers really overlapped: one swapped, another found its batch still flushing.
      expect(outcomes.resumed).toBeGreaterThan(0);
    },
  );

  it("syncers whose leases run out mid-cycle and others taking their shards still count every delta exactly once", async () => {
    const prefix = env.newPrefix();
    const syncers: Syncer[] = [];
    const stalled = new Set<Syncer>();
    let lastCycleBy: Syncer | undefined;
    let takeovers = 0;
    let overlaps = 0;
    let reads = 0;
    for (let i = 0; i < 3; i++) {
      const redis = await env.openRedis();
      const syncer: Syncer = createSyncer({
        redis,
        pool: env.openPool(),
        prefix,
        shards: SHARDS,
        intervalMs: 30,
        leaseTtlMs: 100,
        scanCount: SCAN_COUNT,
        onStep: async (step, shard) => {
          if (step === "before-swap" && shard === 0) {
            if (lastCycleBy !== undefined && lastCycleBy !== syncer) takeovers++;
            if (stalled.size > 0 && !stalled.has(syncer)) overlaps++;
            lastCycleBy = syncer;
          }
          await jitter(step, shard);
          // Every third read, the syncer holding the shard stalls mid-batch (a GC pause, a slow network) for longer than the
          // lease TTL: a BLPOP holds its connection, so its renewals queue up behind it and the lease lapses.
          // Another claims the lease and runs its own cycle while the stalled one still holds a batch.
          if (step === "during-read" && ++reads % 3 === 0) {
            stalled.add(syncer);
            await redis.blpop(`${prefix}:stall`, 0.3);
            stalled.delete(syncer);
          }
        },
      });
      syncers.push(syncer);
    }
    onTestFinished(() => Promise.all(syncers.map((syncer) => syncer.stop())).then(() => {}));
    const expected = new Map<string, bigint>();
    for (const syncer of syncers) syncer.start();

    await runWriter(env.redis, prefix, expected, () => takeovers < 3 || overlaps < 2);
    await Promise.all(syncers.map((syncer) => syncer.stop()));
    const finisher = createSyncer({ redis: env.redis, pool: env.pool, prefix, shards: SHARDS });
    await drain(finisher, env.redis, prefix, SHARDS);

    await expectExactTotals(expected);
    // The scenario really happened: the lease changed hands, and a standby cycled during a stalled batch.
    expect(takeovers).toBeGreaterThanOrEqual(3);
    expect(overlaps).toBeGreaterThanOrEqual(2);
  });
});
