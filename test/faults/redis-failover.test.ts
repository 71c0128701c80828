import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { shardKeys, shardOfKey } from "../../lib/redis/keyspace.ts";
import type { SyncStep } from "../../syncer/flush-context.ts";
import { exactlyOnceViolations, type Load } from "../../tools/load/accounted.ts";
import { type RedisClusterServer, startRedisCluster } from "../../tools/servers/redis-cluster.ts";
import { waitFor } from "../harness/fixtures.ts";
import { Deployment, type SyncerProcess } from "../support/deployment.ts";
import { parseMetrics, sampleValue } from "../support/metrics.ts";

// Failovers of a Redis Cluster master whose replica is behind, under load with a key of its own for every
// request, so that a lost or doubled increment shows as such: every 202 must be in Postgres exactly once.

const SHARDS = 8;
let cluster: RedisClusterServer;

beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3, replicas: 1, nodeTimeoutMs: 1_500 });
}, 120_000);
afterAll(() => cluster?.destroy());

const create = (env: Record<string, string> = {}) =>
  Deployment.forTest({
    clusterNodes: cluster.nodes,
    env: { SYNC_SHARDS: String(SHARDS), SYNC_INTERVAL_MS: "300", ...env },
  });

/**
 * The failover a slow link makes dangerous: `master`'s replica is paused and its link dropped, so it falls
 * behind while the master takes writes (and the syncer's swaps); then the master dies and the replica,
 * resumed, is promoted without them. The old master comes back as a replica of the new one.
 */
async function failOverBehind(master: string, behindMs = 400): Promise<void> {
  const [replica] = await cluster.replicasOf(master);
  if (replica === undefined) throw new Error(`${master} has no replica`);
  cluster.signal(replica, "SIGSTOP");
  await cluster.command(master, "CLIENT", "KILL", "TYPE", "replica");
  await sleep(behindMs);
  await cluster.kill(master);
  // Sent while the replica is paused, so it is promoted the moment it runs again: before it could read
  // anything the dead master had already sent it.
  const takeover = cluster.command(replica, "CLUSTER", "FAILOVER", "TAKEOVER");
  await sleep(20);
  cluster.signal(replica, "SIGCONT");
  await takeover;
}

function lostAndDoubled(load: Load, violations: string[]) {
  return {
    lost: violations.filter((line) => line.endsWith("(lost)")).length,
    doubled: violations.filter((line) => line.endsWith("(doubled)")).length,
    // Every outcome left unknown was said to be: a 503, never a request left without an answer.
    unansweredUnknowns: load.sent.filter((request) => request.outcome === "unknown" && request.status !== 503)
      .length,
  };
}

const isShardStopped = (line: Record<string, unknown>) => String(line.msg).startsWith("shard stopped");
const stoppedShards = (syncer: SyncerProcess) => syncer.logs.filter(isShardStopped);

describe("Redis Cluster failovers with the replica behind", () => {
  it("lose and double nothing: six failovers under load, unknown outcomes only as 503s", {
    timeout: 180_000,
  }, async () => {
    const deployment = await create();
    const api = await deployment.startApi();
    const syncers = [await deployment.startSyncer(), await deployment.startSyncer()];
    const load = await deployment.startLoad([api], { hotKeys: 0, concurrency: 16 });
    await load.waitForAccepted(500);

    for (let round = 0; round < 6; round++) {
      const masters = await cluster.masters();
      const master = masters[round % masters.length] as string;
      await failOverBehind(master);
      await sleep(1_000);
      await cluster.start(master);
    }
    await load.waitForAccepted(500, 60_000);
    await load.stop();
    // Under load from the rest of the suite, syncing after six failovers (replicas resyncing) takes a while.
    await deployment.waitForDrain(120_000);

    const violations = exactlyOnceViolations(load.sent, await deployment.counters());
    expect(lostAndDoubled(load, violations)).toEqual({ lost: 0, doubled: 0, unansweredUnknowns: 0 });
    // The failovers were real, and were answered honestly.
    expect(load.count("unknown")).toBeGreaterThan(0);
    // The acknowledgements kept Redis from ever going back behind what Postgres holds.
    expect(syncers.flatMap(stoppedShards)).toEqual([]);
  });

  it("lose and double nothing when the failover comes while a syncer is at any step of the protocol", {
    timeout: 240_000,
  }, async () => {
    const deployment = await create({ SYNC_SHARDS: "3" });
    const api = await deployment.startApi();
    const load = await deployment.startLoad([api], { hotKeys: 0, concurrency: 8 });
    await load.waitForAccepted(200);

    const steps: SyncStep[] = ["before-swap", "after-swap", "during-read", "before-commit", "after-commit"];
    for (const step of steps) {
      // It stops at the step for every batch; the failover hits the master of the first shard it stops on.
      const syncer = await deployment.startSyncer({ SYNC_FAULT_INJECTION: `${step}:stall=1500` });
      const stall = await syncer.waitForLog((line) => line.msg === "fault injection: stall", 30_000);
      const master = await cluster.masterOf(shardKeys(deployment.prefix, Number(stall.shard)).dirty);
      await failOverBehind(master, 300);
      await sleep(2_000);
      await syncer.stop("SIGKILL");
      expect(stoppedShards(syncer), `at ${step}`).toEqual([]);
      await cluster.start(master);
    }
    await deployment.startSyncer();
    await load.waitForAccepted(200, 60_000);
    await load.stop();
    await deployment.waitForDrain(60_000);

    const violations = exactlyOnceViolations(load.sent, await deployment.counters());
    expect(lostAndDoubled(load, violations)).toEqual({ lost: 0, doubled: 0, unansweredUnknowns: 0 });
  });

  it("a dead replica holds up its master's writes only until the cluster holds it for failed", {
    timeout: 90_000,
  }, async () => {
    const deployment = await create({ SYNC_SHARDS: "3" });
    const api = await deployment.startApi();
    const token = await deployment.token();
    const key = Array.from({ length: 100 }, (_, i) => `replica-dies:${i}`).find(
      (candidate) => shardOfKey(candidate, 3) === 0,
    );
    const send = async () =>
      fetch(`${api.url}/increment`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}` },
        body: JSON.stringify({ key, value: 1 }),
      }).then(async (response) => ({ status: response.status, body: await response.text() }));
    expect((await send()).status).toBe(202);
    const master = await cluster.masterOf(shardKeys(deployment.prefix, 0).dirty);
    const [replica] = await cluster.replicasOf(master);
    if (replica === undefined) throw new Error(`${master} has no replica`);

    await cluster.kill(replica);
    const answers: { status: number; body: string }[] = [];
    await waitFor(
      async () => {
        answers.push(await send());
        return answers.at(-1)?.status === 202;
      },
      { timeoutMs: 30_000, message: () => `writes stayed refused: ${JSON.stringify(answers.at(-1))}` },
    );

    // Until then the write could not be confirmed, and said so; after, no replica could be promoted.
    expect(answers[0]?.body).toContain("replication_unconfirmed");
    expect(answers.filter(({ status }) => status !== 202 && status !== 503)).toEqual([]);
    await cluster.start(replica);
  });

  it("traded away (REDIS_WAIT_REPLICAS=0), a syncer stops the shard that went back instead of counting twice", {
    timeout: 120_000,
  }, async () => {
    const deployment = await create({ REDIS_WAIT_REPLICAS: "0", SYNC_SHARDS: "3" });
    const api = await deployment.startApi();
    const syncer = await deployment.startSyncer();
    const load = await deployment.startLoad([api], { hotKeys: 0, concurrency: 8 });
    await load.waitForAccepted(300);

    // Long enough behind that the syncer swaps and commits the shard on the master alone.
    const master = await cluster.masterOf(shardKeys(deployment.prefix, 0).dirty);
    await failOverBehind(master, 1_500);
    const stopped = await syncer.waitForLog(isShardStopped, 30_000);
    expect(String(stopped.reason)).toMatch(
      /^Redis went back in time on shard \d: its batch sequence in Redis is \d+, but Postgres has committed batch \d+$/,
    );
    await load.stop();

    // Not ready, and saying why, while it holds the stopped shard (it may be taking its leases back from the
    // new master for a moment).
    const readyz = syncer.metricsUrl.replace(/\/metrics$/, "/readyz");
    await waitFor(
      async () => {
        const readiness = await fetch(readyz);
        const body = (await readiness.json()) as { stoppedShards?: number[] };
        return readiness.status === 503 && body.stoppedShards?.includes(Number(stopped.shard));
      },
      { timeoutMs: 10_000, message: "the syncer's /readyz did not name the stopped shard" },
    );
    const metrics = parseMetrics(await (await fetch(syncer.metricsUrl)).text());
    expect(sampleValue(metrics, "tally_syncer_stopped_shards")).toBeGreaterThanOrEqual(1);
    // One line per shard stopped, however many cycles find it still behind.
    await sleep(1_000);
    const shardsSaid = stoppedShards(syncer).map((line) => line.shard);
    expect(new Set(shardsSaid).size).toBe(shardsSaid.length);

    // Nothing is counted twice while the shard waits for an operator (what the failover lost is lost).
    const violations = exactlyOnceViolations(load.sent, await deployment.counters());
    expect(violations.filter((line) => line.endsWith("(doubled)"))).toEqual([]);

    // The runbook's way on, keeping what is in Redis: the sequence set to Postgres' (docs/operations.md). The
    // failed master may have served more than one shard: each shard the syncer names gets the same.
    const keepWhatRedisHolds = async (shardNumber: number) => {
      const { rows } = await deployment.pool.query<{ last_seq: string }>(
        "SELECT last_seq::text FROM sync_state WHERE shard = $1",
        [shardNumber],
      );
      await deployment.redis.set(shardKeys(deployment.prefix, shardNumber).seq, String(rows[0]?.last_seq));
    };
    let lastReadiness = "";
    await waitFor(
      async () => {
        const readiness = await fetch(readyz);
        const body = (await readiness.json()) as { stoppedShards?: number[] };
        lastReadiness = `${readiness.status} ${JSON.stringify(body)}`;
        if (readiness.ok) return true;
        for (const shardNumber of body.stoppedShards ?? []) await keepWhatRedisHolds(shardNumber);
        return false;
      },
      { timeoutMs: 30_000, message: () => `the syncer did not become ready again: ${lastReadiness}` },
    );
    expect(
      syncer.logs.some((line) => line.msg === "shard syncs again" && line.shard === Number(stopped.shard)),
    ).toBe(true);
    await cluster.start(master);
  });
});
