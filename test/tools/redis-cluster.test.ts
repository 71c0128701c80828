import { Cluster, type Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { type RedisClusterServer, startRedisCluster } from "../../tools/servers/redis-cluster.ts";
import { waitFor } from "../harness/fixtures.ts";

const SHARDS = 8;
const shardKey = (shard: number) => `{tally:${shard}}:dirty`;

// Close to what the service will use: fail fast instead of queueing or retrying while a slot is down, so
// "writes fail while the master is down" is observable within a bounded time.
function clusterClient(nodes: string[]): Cluster {
  const client = new Cluster(
    nodes.map((node) => {
      const [host, port] = node.split(":");
      return { host, port: Number(port) };
    }),
    {
      lazyConnect: true,
      enableOfflineQueue: false,
      retryDelayOnClusterDown: 0,
      retryDelayOnFailover: 100,
      maxRedirections: 4,
      clusterRetryStrategy: () => 200,
      redisOptions: { maxRetriesPerRequest: 0, commandTimeout: 2_000, connectTimeout: 1_000 },
    },
  );
  // Failures surface through the rejected commands; the events would only be noise.
  client.on("error", () => {});
  client.on("node error", () => {});
  return client;
}

const addressOf = (node: Redis) => `${node.options.host}:${node.options.port}`;

async function keySlot(client: Cluster, key: string): Promise<number> {
  return Number(await client.call("CLUSTER", "KEYSLOT", key));
}

/** The master connection holding `key`, found by asking every master how many keys its slot has. */
async function holderOf(client: Cluster, key: string): Promise<string> {
  const slot = await keySlot(client, key);
  const holders: string[] = [];
  for (const node of client.nodes("master")) {
    if (Number(await node.call("CLUSTER", "COUNTKEYSINSLOT", String(slot))) > 0)
      holders.push(addressOf(node));
  }
  expect(holders, `masters holding ${key} (slot ${slot})`).toHaveLength(1);
  return holders[0] ?? "";
}

/** Resolves true once a write to `key` is rejected with an error matching `pattern`. */
const writeFailsWith = (client: Cluster, key: string, pattern: RegExp) => () =>
  client.hincrby(key, "probe", 1).then(
    () => false,
    (error: unknown) => error instanceof Error && pattern.test(error.message),
  );

describe("redis cluster, 3 masters", () => {
  let cluster: RedisClusterServer | undefined;
  let client: Cluster | undefined;
  afterAll(async () => {
    client?.disconnect();
    await cluster?.destroy();
  });

  it("spreads shards over the masters and keeps AOF data across a master's kill -9 and clean stop", async () => {
    cluster = await startRedisCluster({ appendFsync: "always" });
    const running = cluster;
    expect(running.nodes).toHaveLength(3);
    expect(new Set(running.nodes).size).toBe(3);
    expect([...(await running.masters())].sort()).toEqual([...running.nodes].sort());

    client = clusterClient(running.nodes);
    const redis = client;
    await redis.connect();

    // Plain keys hash all over the slot space, so every master must have received some.
    const plainKeys = Array.from({ length: 200 }, (_, index) => `plain:${index}`);
    await Promise.all(plainKeys.map((key, index) => redis.set(key, String(index))));
    const sizes = await Promise.all(redis.nodes("master").map((node) => node.dbsize()));
    expect(sizes).toHaveLength(3);
    expect(sizes.every((size) => size > 0)).toBe(true);
    expect(sizes.reduce((sum, size) => sum + size, 0)).toBe(plainKeys.length);

    const owners = new Map<number, string>();
    for (let shard = 0; shard < SHARDS; shard++) {
      const key = shardKey(shard);
      expect(await redis.hincrby(key, "count", shard + 1)).toBe(shard + 1);
      const holder = await holderOf(redis, key);
      expect(await running.masterOf(key)).toBe(holder);
      owners.set(shard, holder);
    }
    // {tally:0..7} hash to slots 412, 4541, 8670, 12799, 280, 4409, 8538, 12667: all three ranges.
    expect(new Set(owners.values()).size).toBe(3);

    const victim = owners.get(0) ?? "";
    const bystanderShard = [...owners].find(([, owner]) => owner !== victim)?.[0] ?? 0;
    await running.kill(victim);
    // No replica takes over, so the dead master keeps its slots.
    expect(await running.masters()).toContain(victim);
    await expect(redis.hincrby(shardKey(0), "count", 100)).rejects.toThrow();
    // Once the others agree the master has failed (node timeout), redis' default full-coverage rule takes
    // the slots of the surviving masters down too.
    await waitFor(writeFailsWith(redis, shardKey(bystanderShard), /CLUSTERDOWN/), {
      timeoutMs: 15_000,
      message: "surviving masters did not report CLUSTERDOWN",
    });
    await expect(redis.hincrby(shardKey(0), "count", 100)).rejects.toThrow();

    await running.start(victim);
    // The client finds the master again by itself; the failed increments above were never applied.
    const afterKill = await waitFor(() => redis.hincrby(shardKey(0), "count", 10), {
      timeoutMs: 10_000,
      message: "writes to the restarted master's slot did not succeed",
    });
    expect(afterKill).toBe(11);

    // A clean stop flushes the AOF too; the node comes back with the same identity and slots.
    await running.stop(victim);
    await expect(redis.hincrby(shardKey(0), "count", 100)).rejects.toThrow();
    await running.start(victim);
    expect(await running.masterOf(shardKey(0))).toBe(victim);
    await waitFor(() => redis.hincrby(shardKey(0), "count", 10), { timeoutMs: 10_000 });

    for (let shard = 0; shard < SHARDS; shard++) {
      expect(await redis.hget(shardKey(shard), "count")).toBe(String(shard === 0 ? 21 : shard + 1));
    }
    const values = await Promise.all(plainKeys.map((key) => redis.get(key)));
    expect(values).toEqual(plainKeys.map((_, index) => String(index)));
  }, 90_000);
});

describe("redis cluster, 3 masters with a replica each", () => {
  let cluster: RedisClusterServer | undefined;
  let client: Cluster | undefined;
  afterAll(async () => {
    client?.disconnect();
    await cluster?.destroy();
  });

  it("fails a killed master over to its replica, and the old master rejoins as a replica", async () => {
    cluster = await startRedisCluster({ replicas: 1, appendFsync: "always", requireFullCoverage: false });
    const running = cluster;
    expect(running.nodes).toHaveLength(6);
    const masters = await running.masters();
    expect(masters).toHaveLength(3);

    client = clusterClient(running.nodes);
    const redis = client;
    await redis.connect();
    for (let shard = 0; shard < SHARDS; shard++) await redis.hincrby(shardKey(shard), "count", shard + 1);

    const victim = await running.masterOf(shardKey(0));
    let bystanderShard = 0;
    for (let shard = 1; shard < SHARDS && bystanderShard === 0; shard++) {
      if ((await running.masterOf(shardKey(shard))) !== victim) bystanderShard = shard;
    }
    expect(bystanderShard).toBeGreaterThan(0);
    // Replication is asynchronous: make sure the replica has the data before its master dies.
    const victimConnection = redis.nodes("master").find((node) => addressOf(node) === victim);
    expect(victimConnection).toBeDefined();
    expect(await victimConnection?.call("WAIT", "1", "5000")).toBe(1);

    await running.kill(victim);
    // Without full coverage required, the other masters' slots stay writable while one is down.
    expect(await redis.hincrby(shardKey(bystanderShard), "count", 0)).toBe(bystanderShard + 1);
    const promoted = await waitFor(
      async () => {
        const owner = await running.masterOf(shardKey(0));
        return owner !== victim && owner;
      },
      { timeoutMs: 15_000, message: "no replica took over the killed master's slots" },
    );
    expect(await running.masters()).not.toContain(victim);
    expect(await redis.hincrby(shardKey(bystanderShard), "count", 0)).toBe(bystanderShard + 1);
    const afterFailover = await waitFor(() => redis.hincrby(shardKey(0), "count", 10), {
      timeoutMs: 10_000,
      message: "writes to the failed-over slot did not succeed",
    });
    expect(afterFailover).toBe(11);

    await running.start(victim);
    expect(await running.masterOf(shardKey(0))).toBe(promoted);
    expect([...(await running.masters())].sort()).toEqual(
      [...masters.filter((master) => master !== victim), promoted].sort(),
    );
    for (let shard = 0; shard < SHARDS; shard++) {
      expect(await redis.hget(shardKey(shard), "count")).toBe(String(shard === 0 ? 11 : shard + 1));
    }
  }, 90_000);
});
