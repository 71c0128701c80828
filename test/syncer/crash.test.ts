import { randomUUID } from "node:crypto";
import { describe, expect, it, onTestFinished } from "vitest";
import { shardKeys } from "../../lib/redis/keyspace.ts";
import type { SyncStep } from "../../syncer/flush-context.ts";
import type { Syncer } from "../../syncer/syncer.ts";
import { waitFor } from "../harness/fixtures.ts";
import {
  addDeltas,
  createSyncer,
  expectDelta,
  isDrained,
  readCounters,
  readLedger,
  swapAside,
  useSyncerEnv,
} from "../support/syncer.ts";

// A syncer process can die at any step of the protocol. Each "crash" here is a syncer whose onStep hook
// throws at one step, after which it is abandoned with its connections closed; a new syncer, with clients
// of its own like a newly started process, must then finish the job with nothing lost and nothing doubled.

const KEYS = 300;
const SCAN_COUNT = 50;

const env = useSyncerEnv();

class Crash extends Error {
  constructor(readonly step: SyncStep) {
    super(`injected crash at ${step}`);
  }
}

/** A syncer with its own Redis client and pool, as a separate process would have. */
async function syncerProcess(
  prefix: string,
  crashAt?: SyncStep,
): Promise<{ syncer: Syncer; exit(): Promise<void> }> {
  const redis = await env.openRedis();
  const pool = env.openPool();
  const syncer = createSyncer({
    redis,
    pool,
    prefix,
    scanCount: SCAN_COUNT,
    onStep: (step) => {
      if (step === crashAt) throw new Crash(step);
    },
  });
  return {
    syncer,
    exit: async () => {
      redis.disconnect();
      if (!pool.ending) await pool.end();
    },
  };
}

/** Writes one delta to each of KEYS keys (positive and negative) and records them in `expected`. */
async function writeRound(prefix: string, expected: Map<string, bigint>, round: number): Promise<void> {
  const writes: [string, number][] = [];
  for (let i = 0; i < KEYS; i++) writes.push([`k${i}`, (i % 2 === 0 ? 1 : -1) * (i + round * 1_000)]);
  await addDeltas(env.redis, prefix, writes);
  for (const [key, delta] of writes) expectDelta(expected, key, delta);
}

describe("a syncer that crashes mid-protocol", () => {
  it("after the commit, before the delete: the next syncer finds the batch in the ledger and does not reapply it", async () => {
    const prefix = env.newPrefix();
    const keys = shardKeys(prefix, 0);
    const expected = new Map<string, bigint>();
    await writeRound(prefix, expected, 1);
    const crashed = await syncerProcess(prefix, "after-commit");

    const crashReport = await crashed.syncer.runCycle();
    await crashed.exit();

    expect(crashReport.failures).toEqual([{ shard: 0, error: expect.any(Crash) }]);
    const crashedBatch = await env.redis.hget(keys.flushingMeta, "batch");
    expect(crashedBatch).not.toBeNull();
    expect(await env.redis.hlen(keys.flushing)).toBe(KEYS);
    // Committed: Postgres already holds the batch that is still in Redis.
    expect(await readCounters(env.pool)).toEqual(expected);
    expect((await readLedger(env.pool)).map((row) => row.batch_id)).toEqual([crashedBatch]);

    // Written while no syncer was running.
    await writeRound(prefix, expected, 2);
    const successor = await syncerProcess(prefix);
    onTestFinished(successor.exit);

    const report = await successor.syncer.runCycle();

    expect(report.failures).toEqual([]);
    expect(report.outcomes).toMatchObject([
      { kind: "batch", batchId: crashedBatch, resumed: true, applied: false },
      { kind: "batch", resumed: false, applied: true, keys: KEYS },
    ]);
    expect(await readCounters(env.pool)).toEqual(expected);
    expect(await isDrained(env.redis, prefix)).toBe(true);
    expect(await readLedger(env.pool)).toHaveLength(2);
  });

  it.each<{ step: SyncStep; leaves: "dirty" | "flushing" }>([
    { step: "before-swap", leaves: "dirty" },
    { step: "after-swap", leaves: "flushing" },
    { step: "during-read", leaves: "flushing" },
    { step: "before-commit", leaves: "flushing" },
  ])(
    "at $step: nothing reaches Postgres, the $leaves hash survives, the next syncer applies it once",
    async ({ step, leaves }) => {
      const prefix = env.newPrefix();
      const keys = shardKeys(prefix, 0);
      const expected = new Map<string, bigint>();
      await writeRound(prefix, expected, 1);
      const crashed = await syncerProcess(prefix, step);

      const crashReport = await crashed.syncer.runCycle();
      await crashed.exit();

      expect(crashReport.failures).toEqual([{ shard: 0, error: expect.any(Crash) }]);
      expect(await readCounters(env.pool)).toEqual(new Map());
      expect(await readLedger(env.pool)).toEqual([]);
      expect(await env.redis.hlen(leaves === "dirty" ? keys.dirty : keys.flushing)).toBe(KEYS);

      await writeRound(prefix, expected, 2);
      const successor = await syncerProcess(prefix);
      onTestFinished(successor.exit);

      const report = await successor.syncer.runCycle();

      expect(report.failures).toEqual([]);
      expect(await readCounters(env.pool)).toEqual(expected);
      expect(await isDrained(env.redis, prefix)).toBe(true);
      // Either one batch (both rounds were still dirty) or the stranded batch plus the newer dirty one.
      const ledger = await readLedger(env.pool);
      expect(ledger).toHaveLength(leaves === "dirty" ? 1 : 2);
      expect(ledger.reduce((sum, row) => sum + BigInt(row.delta_sum), 0n)).toBe(
        [...expected.values()].reduce((sum, value) => sum + value, 0n),
      );
    },
  );

  it("crashes at every step in turn across successive syncers, and the totals still come out exact", async () => {
    const prefix = env.newPrefix();
    const expected = new Map<string, bigint>();
    const steps: SyncStep[] = ["after-swap", "after-commit", "before-commit", "during-read", "before-swap"];
    for (const [round, step] of steps.entries()) {
      await writeRound(prefix, expected, round);
      const crashed = await syncerProcess(prefix, step);
      const report = await crashed.syncer.runCycle();
      await crashed.exit();
      expect(report.failures).toEqual([{ shard: 0, error: expect.any(Crash) }]);
    }
    const successor = await syncerProcess(prefix);
    onTestFinished(successor.exit);

    await successor.syncer.runCycle();

    expect(await readCounters(env.pool)).toEqual(expected);
    expect(await isDrained(env.redis, prefix)).toBe(true);
  });
});

describe("a syncer that starts after a crash", () => {
  it("finishes the flushing hash left behind, then the dirty writes made since", async () => {
    const prefix = env.newPrefix();
    const keys = shardKeys(prefix, 0);
    const expected = new Map<string, bigint>();
    await writeRound(prefix, expected, 1);
    // What a syncer that died right after its swap leaves behind.
    const stranded = randomUUID();
    await swapAside(env.redis, keys, stranded, Date.now());
    await writeRound(prefix, expected, 2);
    const { syncer, exit } = await syncerProcess(prefix);
    onTestFinished(exit);
    onTestFinished(() => syncer.stop());

    syncer.start();

    await waitFor(
      async () => (await isDrained(env.redis, prefix)) && (await readLedger(env.pool)).length === 2,
      {
        message: "the syncer did not finish the stranded batch and the dirty hash",
      },
    );
    expect(await readCounters(env.pool)).toEqual(expected);
    expect((await readLedger(env.pool)).map((row) => row.batch_id)).toContain(stranded);
  });
});
