import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exactlyOnceViolations } from "../../tools/load/accounted.ts";
import { type RedisSentinelDeployment, startRedisSentinel } from "../../tools/servers/redis-sentinel.ts";
import { waitFor } from "../harness/fixtures.ts";
import { Deployment } from "../support/deployment.ts";

// A master with a replica and a Sentinel: tally finds the master through the Sentinel and follows its
// failovers without a restart. Each failover comes with the replica behind, so a 202 that it did not hold
// would show as lost, and a swap it missed as counted twice.

let redis: RedisSentinelDeployment;

beforeAll(async () => {
  redis = await startRedisSentinel({ replicas: 1, sentinels: 1, downAfterMs: 1_000 });
}, 60_000);
afterAll(() => redis?.destroy());

describe("Redis Sentinel", () => {
  it("is followed through failovers with the replica behind: nothing lost or doubled, no restart", {
    timeout: 180_000,
  }, async () => {
    const deployment = await Deployment.forTest({
      sentinels: { addresses: redis.sentinels, master: redis.masterName },
      env: { SYNC_SHARDS: "4", SYNC_INTERVAL_MS: "300" },
    });
    const api = await deployment.startApi();
    const syncers = [await deployment.startSyncer(), await deployment.startSyncer()];
    const load = await deployment.startLoad([api], { hotKeys: 0, concurrency: 16 });
    await load.waitForAccepted(500);

    for (let round = 0; round < 3; round++) {
      const master = await redis.master();
      const [replica] = await redis.replicas();
      if (replica === undefined) throw new Error("no replica");
      redis.signal(replica, "SIGSTOP");
      await redis.command(master, "CLIENT", "KILL", "TYPE", "replica");
      await sleep(400);
      const killedAt = performance.now();
      await redis.kill(master);
      redis.signal(replica, "SIGCONT");
      const promoted = await redis.waitForNewMaster(master);
      const promotedAt = performance.now();
      expect(promoted).toBe(replica);

      // Not ready while it has no master, ready again once it follows the new one.
      await waitFor(async () => (await fetch(`${api.url}/readyz`)).status === 503, {
        timeoutMs: 10_000,
        message: "the API stayed ready without a master",
      }).catch(() => undefined);
      await waitFor(async () => (await fetch(`${api.url}/readyz`)).ok, {
        timeoutMs: 20_000,
        message: "the API did not follow the new master",
      });
      const before = load.sent.length;
      await load.waitForAccepted(100, 30_000);
      const first = load.sent.slice(before).find((request) => request.outcome === "accepted");
      expect(first, "a 202 after the failover").toBeDefined();
      // For docs/operations.md: how long a failover takes to be followed.
      console.log(
        `failover ${round + 1}: promoted ${Math.round(promotedAt - killedAt)} ms after the kill, first 202 ${Math.round((first?.endedAt ?? 0) - killedAt)} ms after it`,
      );

      await redis.start(master);
      await redis.waitUntilReplicating();
    }
    await load.waitForAccepted(500, 60_000);
    await load.stop();
    await deployment.waitForDrain(60_000);

    expect(exactlyOnceViolations(load.sent, await deployment.counters())).toEqual([]);
    expect(load.sent.filter((request) => request.outcome === "unknown" && request.status !== 503)).toEqual(
      [],
    );
    // The same processes served throughout, and none saw Redis go back behind Postgres.
    expect([api, ...syncers].map((process) => process.child.exitCode)).toEqual([null, null, null]);
    expect(
      syncers.flatMap((syncer) => syncer.logs).filter((line) => String(line.msg).startsWith("shard stopped")),
    ).toEqual([]);
  });
});
