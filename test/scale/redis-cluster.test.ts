import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { allShardKeys, shardKeys } from "../../lib/redis/keys.ts";
import { waitFor } from "../harness/fixtures.ts";
import { type RedisClusterServer, startRedisCluster } from "../harness/redis-cluster.ts";
import { Deployment } from "../support/deployment.ts";
import { exactlyOnceViolations, Load } from "../support/load.ts";

// tally on a real local Redis Cluster (three masters), API and syncer processes as production runs them.

const SHARDS = 8;
let cluster: RedisClusterServer;

beforeAll(async () => {
  // appendfsync always: one test kill -9s a master and expects every acknowledged write back.
  cluster = await startRedisCluster({ masters: 3, appendFsync: "always" });
});
afterAll(() => cluster?.destroy());

const create = () =>
  Deployment.forTest({
    clusterNodes: cluster.nodes,
    env: { SYNC_SHARDS: String(SHARDS), SYNC_INTERVAL_MS: "300" },
  });

describe("Redis Cluster", () => {
  it("spreads the shards over every master and counts exactly once under load", async () => {
    const deployment = await create();
    const owners = new Set(
      await Promise.all(allShardKeys(deployment.prefix, SHARDS).map((keys) => cluster.masterOf(keys.dirty))),
    );
    expect(owners.size).toBe(3);

    const apis = [await deployment.startApi(), await deployment.startApi()];
    await deployment.startSyncer();
    await deployment.startSyncer();
    const load = new Load({
      targets: () => apis.map((api) => api.url),
      token: await deployment.token(),
    }).start();
    await load.waitForAccepted(1_500);
    await load.stop();
    await deployment.waitForDrain();

    expect(load.count("unknown")).toBe(0);
    expect(exactlyOnceViolations(load.sent, await deployment.counters())).toEqual([]);
  });

  it("spreads one hot key over every shard, and reads add the shards up", async () => {
    const deployment = await create();
    const api = await deployment.startApi();
    const token = await deployment.token();
    const send = () =>
      fetch(`${api.url}/increment`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}` },
        body: JSON.stringify({ key: "hot", value: 3 }),
      }).then((response) => response.status);
    // Requests that arrive together go to Redis in one batch on one random shard, so the spread shows over
    // many turns: 100 waves of 4 miss a given shard of 8 with probability (7/8)^100.
    const statuses: number[] = [];
    for (let wave = 0; wave < 100; wave++)
      statuses.push(...(await Promise.all(Array.from({ length: 4 }, send))));
    expect(statuses.every((status) => status === 202)).toBe(true);

    // No syncer yet: the increments are still in the dirty hashes, one per shard.
    const perShard = await Promise.all(
      allShardKeys(deployment.prefix, SHARDS).map((keys) => deployment.redis.hget(keys.dirty, "hot")),
    );
    expect(perShard.filter((value) => Number(value) > 0).length).toBe(SHARDS);
    expect(perShard.reduce((sum, value) => sum + Number(value ?? 0), 0)).toBe(1_200);
    const pending = await (
      await fetch(`${api.url}/counters/hot`, { headers: { authorization: `Bearer ${token}` } })
    ).json();
    expect(pending).toMatchObject({ pending: 1_200, total: 1_200 });

    await deployment.startSyncer();
    await deployment.waitForDrain();
    expect((await deployment.counters()).get("hot")).toBe(1_200n);
  });

  it("applies retries with an Idempotency-Key once: the record lives in the shard's slot", async () => {
    const deployment = await create();
    const api = await deployment.startApi();
    const token = await deployment.token();
    const send = (idempotencyKey: string) =>
      fetch(`${api.url}/increment`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "idempotency-key": idempotencyKey },
        body: JSON.stringify({ key: "paid", value: 10 }),
      });
    // 20 logical increments, each sent three times: the retries of one land on one shard, on one master.
    for (let request = 0; request < 20; request++) {
      const statuses = await Promise.all([1, 2, 3].map(() => send(`order-${request}`).then((r) => r.status)));
      expect(statuses).toEqual([202, 202, 202]);
    }
    await deployment.startSyncer();
    await deployment.waitForDrain();
    expect((await deployment.counters()).get("paid")).toBe(200n);
  });

  it("survives a master killed and restarted mid-run: 503s while it is down, nothing acknowledged lost", async () => {
    const deployment = await create();
    const apis = [await deployment.startApi(), await deployment.startApi()];
    await deployment.startSyncer();
    const load = new Load({
      targets: () => apis.map((api) => api.url),
      token: await deployment.token(),
    }).start();
    await load.waitForAccepted(300);

    const victim = await cluster.masterOf(shardKeys(deployment.prefix, 0).dirty);
    const before = load.sent.length;
    await cluster.kill(victim);
    await sleep(4_000);
    const during = load.sent.slice(before);
    await cluster.start(victim);
    await waitFor(async () => load.sent.slice(-20).every((request) => request.outcome === "accepted"), {
      timeoutMs: 20_000,
      message: "the API did not recover after the master came back",
    });
    await load.waitForAccepted(300);
    await load.stop();
    await deployment.waitForDrain(30_000);

    // The outage was real and was answered honestly: 503s, no hangs.
    expect(during.some((request) => request.status === 503)).toBe(true);
    expect(exactlyOnceViolations(load.sent, await deployment.counters())).toEqual([]);
  });
});
