import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { exactlyOnceViolations, Load } from "../../tools/load/accounted.ts";
import type { ServiceProcess } from "../../tools/process.ts";
import { Deployment } from "../support/deployment.ts";

const becameLeader = (syncer: ServiceProcess) =>
  syncer.logs.filter((line) => line.msg === "became the leader");

describe("several syncer processes", () => {
  it.each([
    { count: 2, step: "after-swap" },
    { count: 3, step: "after-swap" },
    { count: 2, step: "before-commit" },
    { count: 3, step: "before-commit" },
  ])(
    "$count syncers whose event loop freezes at $step, so leases lapse and others take over: exactly once",
    async ({ count, step }) => {
      // A 600 ms freeze outlives the 300 ms lease: the next syncer claims it and resumes the very batch the
      // frozen one holds, so two syncers work on one batch at once, over and over. Frozen after the swap,
      // the first one finds its batch finished by the other when it wakes; frozen with its transaction open,
      // it races the other to the ledger row.
      const deployment = await Deployment.forTest({
        env: { SYNC_INTERVAL_MS: "100", SYNC_LEASE_TTL_MS: "300" },
      });
      const api = await deployment.startApi();
      const load = new Load({
        targets: () => [api.url],
        token: await deployment.token(),
        concurrency: 6,
      }).start();
      const syncers: ServiceProcess[] = [];
      for (let i = 0; i < count; i++) {
        syncers.push(await deployment.startSyncer({ SYNC_FAULT_INJECTION: `${step}:freeze=600` }));
      }
      const takeovers = () => syncers.reduce((sum, syncer) => sum + becameLeader(syncer).length, 0);
      while (takeovers() < 6) {
        await load.waitForAccepted(50);
      }
      await load.stop();
      // The frozen syncers finish the stragglers; a plain one makes sure the drain does not depend on luck.
      await deployment.startSyncer();
      await deployment.waitForDrain();

      expect(exactlyOnceViolations(load.sent, await deployment.counters())).toEqual([]);
      expect(load.count("accepted")).toBeGreaterThan(0);
      // More than one process led, and leaders lost the lease mid-cycle: the scenario really happened.
      expect(syncers.filter((syncer) => becameLeader(syncer).length > 0).length).toBeGreaterThan(1);
      const lost = syncers.flatMap((syncer) =>
        syncer.logs.filter((line) => line.msg === "lost the leader lease"),
      );
      expect(lost.length).toBeGreaterThan(0);
      const { rows } = await deployment.pool.query<{ n: string }>("SELECT count(*) AS n FROM sync_batches");
      expect(Number(rows[0]?.n)).toBeGreaterThan(3);
    },
  );
});

describe("leader failover", () => {
  it("a standby takes over within a few seconds of the leader's death and staleness stays under 10 s", async () => {
    // Production timings: a 5 s cycle and a 3 s lease.
    const deployment = await Deployment.forTest({
      env: { SYNC_INTERVAL_MS: "5000", SYNC_LEASE_TTL_MS: "3000" },
    });
    const api = await deployment.startApi();
    const load = new Load({
      targets: () => [api.url],
      token: await deployment.token(),
      concurrency: 2,
      pauseMs: 5,
    }).start();
    const first = await deployment.startSyncer();
    await first.waitForLog((line) => line.msg === "became the leader");
    const second = await deployment.startSyncer();
    // Let the leader commit a batch under load, so there is a staleness to keep.
    const d = deployment;
    await waitUntil(async () => ((await d.stalenessSeconds()) ?? 99) < 5);
    await sleep(3_000);

    const killedAt = Date.now();
    await first.stop("SIGKILL");
    await second.waitForLog((line) => line.msg === "became the leader", 10_000);
    const takeoverSeconds = (Date.now() - killedAt) / 1000;

    // Watch staleness through the next two cycles of the new leader.
    let worstStaleness = 0;
    const watchUntil = Date.now() + 11_000;
    while (Date.now() < watchUntil) {
      worstStaleness = Math.max(worstStaleness, (await deployment.stalenessSeconds()) ?? 0);
      await sleep(200);
    }
    await load.stop();
    await deployment.waitForDrain();

    expect(exactlyOnceViolations(load.sent, await deployment.counters())).toEqual([]);
    // TTL 3 s + the standby's 250 ms poll, with room for a loaded machine.
    expect(takeoverSeconds).toBeLessThan(5);
    expect(worstStaleness).toBeLessThan(10);
  });
});

async function waitUntil(probe: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error("condition not reached");
    await sleep(100);
  }
}
