import { describe, expect, it } from "vitest";
import { shardKeys } from "../../lib/redis/keyspace.ts";
import type { SyncStep } from "../../syncer/flush-context.ts";
import { exactlyOnceViolations } from "../../tools/load/accounted.ts";
import { Deployment } from "../support/deployment.ts";

// kill -9 of a real syncer process at each step of the protocol, under load from a real API process.
// A second syncer then takes over; Postgres must hold every accepted increment exactly once.

const STEPS: { step: SyncStep; leavesFlushingHash: boolean }[] = [
  { step: "before-swap", leavesFlushingHash: false },
  { step: "after-swap", leavesFlushingHash: true },
  { step: "during-read", leavesFlushingHash: true },
  { step: "before-commit", leavesFlushingHash: true },
  { step: "after-commit", leavesFlushingHash: true },
];

describe("kill -9 of the syncer", () => {
  it.each(STEPS)("at $step: nothing lost, nothing doubled", async ({ step, leavesFlushingHash }) => {
    const deployment = await Deployment.forTest({
      env: { SYNC_INTERVAL_MS: "250", SYNC_LEASE_TTL_MS: "1000" },
    });
    const api = await deployment.startApi();
    const load = await deployment.startLoad([api], { concurrency: 6, resetKeys: 2 });
    await load.waitForAccepted(100);

    // Dies the second time it reaches the step, so one batch went through normally before.
    const doomed = await deployment.startSyncer({ SYNC_FAULT_INJECTION: `${step}:kill@2` });
    expect((await doomed.exited).signal).toBe("SIGKILL");
    expect(doomed.logs.some((line) => line.msg === "fault injection: SIGKILL" && line.step === step)).toBe(
      true,
    );
    // The crash left the state the step implies: a batch stranded in the flushing hash, or none.
    const { flushing } = shardKeys(deployment.prefix, 0);
    expect(await deployment.redis.exists(flushing)).toBe(leavesFlushingHash ? 1 : 0);

    await load.waitForAccepted(100);
    const survivor = await deployment.startSyncer();
    await load.waitForAccepted(200);
    await load.stop();
    await deployment.waitForDrain();

    expect(exactlyOnceViolations(load.sent, await deployment.counters())).toEqual([]);
    expect(load.count("unknown")).toBe(0);
    expect(load.count("accepted", "reset")).toBeGreaterThan(0);
    // For the figures in docs/testing.md.
    console.log(`kill -9 at ${step}: ${load.summary()}`);
    expect(survivor.logs.some((line) => line.level === "error")).toBe(false);
  });
});

describe("kill -9 of one of two syncers that share the shards", () => {
  it.each(STEPS)(
    "at $step: the other takes its shards back; nothing lost, nothing doubled",
    async ({ step }) => {
      const deployment = await Deployment.forTest({
        env: { SYNC_INTERVAL_MS: "250", SYNC_LEASE_TTL_MS: "1000", SYNC_SHARDS: "4" },
      });
      const api = await deployment.startApi();
      const load = await deployment.startLoad([api], { concurrency: 6, resetKeys: 2 });
      const survivor = await deployment.startSyncer();
      await load.waitForAccepted(100);

      // It joins, gets half of the shards from the survivor, and dies the second time it reaches the step.
      const doomed = await deployment.startSyncer({ SYNC_FAULT_INJECTION: `${step}:kill@2` });
      expect((await doomed.exited).signal).toBe("SIGKILL");
      // Its fair share, two of the four, comes a shard at a time as the survivor gives them up; it may die
      // holding the first.
      const took = doomed.logs.flatMap((line) =>
        line.msg === "took shards" ? (line.shards as number[]) : [],
      );
      expect(took.length).toBeGreaterThanOrEqual(1);
      expect(new Set(took).size).toBeLessThanOrEqual(2);

      await load.waitForAccepted(200);
      await load.stop();
      await deployment.waitForDrain();

      expect(exactlyOnceViolations(load.sent, await deployment.counters())).toEqual([]);
      expect(load.count("unknown")).toBe(0);
      expect(load.count("accepted", "reset")).toBeGreaterThan(0);
      // The survivor gave the doomed one its share, and took it back after the TTL.
      expect(survivor.logs.filter((line) => line.msg === "took shards").length).toBeGreaterThanOrEqual(2);
      expect(survivor.logs.some((line) => line.level === "error")).toBe(false);
    },
  );
});
