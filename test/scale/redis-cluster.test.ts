import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { allShardKeys, Keyspace, type ShardKeys, shardKeys, shardOfKey } from "../../lib/redis/keyspace.ts";
import { exactlyOnceViolations } from "../../tools/load/accounted.ts";
import { type RedisClusterServer, startRedisCluster } from "../../tools/servers/redis-cluster.ts";
import { waitFor } from "../harness/fixtures.ts";
import { Deployment } from "../support/deployment.ts";

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
    const load = await deployment.startLoad(apis);
    await load.waitForAccepted(1_500);
    await load.stop();
    await deployment.waitForDrain();

    expect(load.count("unknown")).toBe(0);
    expect(exactlyOnceViolations(load.sent, await deployment.counters())).toEqual([]);
  });

  it("keeps each key in its shard on its master, and reads add up a key's deltas in other shards", async () => {
    const deployment = await create();
    const api = await deployment.startApi();
    const token = await deployment.token();
    const send = (key: string) =>
      fetch(`${api.url}/increment`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}` },
        body: JSON.stringify({ key, value: 3 }),
      }).then((response) => response.status);
    const keys = Array.from({ length: 32 }, (_, i) => `key:${i}`);
    const statuses: number[] = [];
    for (let wave = 0; wave < 10; wave++) statuses.push(...(await Promise.all(keys.map(send))));
    expect(statuses.every((status) => status === 202)).toBe(true);

    // No syncer yet: each key's increments are all in its own shard's dirty hash, and the keys reach every
    // master.
    const shards = allShardKeys(deployment.prefix, SHARDS);
    const dirtyHashes = await Promise.all(shards.map((keys) => deployment.redis.hgetall(keys.dirty)));
    for (const key of keys) {
      expect(dirtyHashes.flatMap((hash, shard) => (key in hash ? [shard] : []))).toEqual([
        shardOfKey(key, SHARDS),
      ]);
      expect(dirtyHashes[shardOfKey(key, SHARDS)]?.[key]).toBe("30");
    }
    const mastersUsed = await Promise.all(
      keys.map((key) => cluster.masterOf((shards[shardOfKey(key, SHARDS)] as ShardKeys).dirty)),
    );
    expect(new Set(mastersUsed).size).toBe(3);

    // A key can also have deltas in other shards (left there by a deployment with another SYNC_SHARDS):
    // reads and the syncer add every shard up.
    const elsewhere = shards.filter((keys) => keys.shard !== shardOfKey("key:0", SHARDS));
    for (const keys of elsewhere) await deployment.redis.hincrby(keys.dirty, "key:0", 1);
    const expected = 30 + elsewhere.length;
    const reading = await (
      await fetch(`${api.url}/counters/key:0`, { headers: { authorization: `Bearer ${token}` } })
    ).json();
    expect(reading).toMatchObject({ pending: expected, total: expected });

    await deployment.startSyncer();
    await deployment.waitForDrain();
    expect((await deployment.counters()).get("key:0")).toBe(BigInt(expected));
  });

  it("applies retries with an Idempotency-Key once, each key's increments and records in the key's shard", async () => {
    const deployment = await create();
    const api = await deployment.startApi();
    const token = await deployment.token();
    const send = (key: string, idempotencyKey: string) =>
      fetch(`${api.url}/increment`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "idempotency-key": idempotencyKey },
        body: JSON.stringify({ key, value: 10 }),
      });
    // 24 logical increments over 8 keys, each sent three times at once.
    const keys = Array.from({ length: 8 }, (_, i) => `paid:${i}`);
    for (let request = 0; request < 24; request++) {
      const key = keys[request % keys.length] ?? "paid:0";
      const statuses = await Promise.all(
        [1, 2, 3].map(() => send(key, `order-${request}`).then((r) => r.status)),
      );
      expect(statuses).toEqual([202, 202, 202]);
    }

    // Key-disjoint shards: every key only in its own shard's dirty hash, its records in that shard's slot.
    const keyspace = new Keyspace(deployment.prefix, SHARDS);
    const shards = keyspace.shards;
    const dirtyHashes = await Promise.all(shards.map((shard) => deployment.redis.hgetall(shard.dirty)));
    for (const key of keys) {
      expect(dirtyHashes.flatMap((hash, shard) => (key in hash ? [shard] : []))).toEqual([
        shardOfKey(key, SHARDS),
      ]);
    }
    for (let request = 0; request < 24; request++) {
      const shard = keyspace.shardOf(keys[request % keys.length] ?? "paid:0");
      const record = keyspace.idempotencyRecord(shard, "load", `order-${request}`);
      expect(await deployment.redis.exists(record.key)).toBe(1);
    }

    await deployment.startSyncer();
    await deployment.waitForDrain();
    const counters = await deployment.counters();
    for (const key of keys) expect(counters.get(key)).toBe(30n);
  });

  it("survives a master killed and restarted mid-run: 503s while it is down, nothing acknowledged lost", async () => {
    const deployment = await create();
    const apis = [await deployment.startApi(), await deployment.startApi()];
    await deployment.startSyncer();
    const load = await deployment.startLoad(apis);
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

  it("batches spanning every master, each with an Idempotency-Key, under a master killed and restarted: never a 202 for part of one, and retries apply each increment exactly once", {
    timeout: 90_000,
  }, async () => {
    const deployment = await create();
    const api = await deployment.startApi();
    const token = await deployment.token();
    const batch = (n: number) =>
      Array.from({ length: 16 }, (_, i) => ({ key: `batch:${n}:${i}`, value: i + 1 }));
    const send = (n: number) =>
      fetch(`${api.url}/increments`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "idempotency-key": `batch-${n}` },
        body: JSON.stringify({ increments: batch(n) }),
      }).then(async (response) => ({ status: response.status, body: await response.text() }));
    // Sixteen keys over eight shards on three masters: a batch touches every master, almost surely.
    const mastersOfFirst = new Set(
      await Promise.all(
        batch(0).map(({ key }) =>
          cluster.masterOf(shardKeys(deployment.prefix, shardOfKey(key, SHARDS)).dirty),
        ),
      ),
    );
    expect(mastersOfFirst.size).toBe(3);

    const statuses = new Map<number, number>();
    for (let n = 0; n < 5; n++) statuses.set(n, (await send(n)).status);
    expect([...statuses.values()]).toEqual([202, 202, 202, 202, 202]);

    const victim = await cluster.masterOf(shardKeys(deployment.prefix, 0).dirty);
    await cluster.kill(victim);
    const duringOutage: { status: number; body: string }[] = [];
    for (let n = 5; n < 25; n++) {
      const answer = await send(n);
      duringOutage.push(answer);
      statuses.set(n, answer.status);
      await sleep(100);
    }
    await cluster.start(victim);
    // A batch answered anything but 202 is sent again, same key and body, until it is accepted.
    for (let n = 5; n < 25; n++) {
      let last = "";
      await waitFor(
        async () => {
          if (statuses.get(n) !== 202) {
            const answer = await send(n);
            statuses.set(n, answer.status);
            last = `${answer.status} ${answer.body}`;
          }
          return statuses.get(n) === 202;
        },
        {
          // The first batches wait for the cluster to see the master again, longer on a loaded machine.
          timeoutMs: 40_000,
          message: () => `batch ${n} was never accepted after the master came back; last answer: ${last}`,
        },
      );
    }
    await deployment.startSyncer();
    await deployment.waitForDrain(30_000);

    // The outage was answered honestly: 503s that say whether the write was counted, and one that applied
    // part of a batch says how much.
    expect(duringOutage.some((answer) => answer.status === 503)).toBe(true);
    for (const { body } of duringOutage.filter((answer) => answer.status === 503)) {
      expect(body).toMatch(
        /was not counted|may or may not have been applied|of the 16 increments were applied \(other shards\)\. Retry with the same Idempotency-Key/,
      );
    }
    expect(duringOutage.filter((answer) => answer.status !== 503 && answer.status !== 202)).toEqual([]);
    const counters = await deployment.counters();
    const expected = new Map(
      Array.from({ length: 25 }, (_, n) =>
        batch(n).map(({ key, value }) => [key, BigInt(value)] as const),
      ).flat(),
    );
    expect(counters).toEqual(expected);
  });
});
