import type { Redis } from "ioredis";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type AcknowledgementPolicy,
  Acknowledgements,
  NO_REPLICAS,
} from "../../lib/redis/acknowledgements.ts";
import { connectRedis, createRedis, type RedisClient } from "../../lib/redis/client.ts";
import { Keyspace } from "../../lib/redis/keyspace.ts";
import { Masters } from "../../lib/redis/masters.ts";
import { ReplicaWatch } from "../../lib/redis/replica-watch.ts";
import { Scripts } from "../../lib/redis/scripts.ts";
import { findOnPath } from "../../tools/servers/binaries.ts";
import { type RedisServer, startRedis } from "../../tools/servers/redis.ts";
import { waitFor } from "../harness/fixtures.ts";
import { captureLogger } from "../support/logger.ts";
import { family, parseMetrics } from "../support/metrics.ts";

// Acknowledgements against a real master and replica: WAIT is about a connection's writes and a live
// replication link, which nothing short of the real thing shows.

let master: RedisServer;
let replica: RedisServer;
const clients: RedisClient[] = [];

async function client(url: string): Promise<RedisClient> {
  const redis = createRedis({ url, name: "test-acks", commandTimeoutMs: 5_000 });
  redis.on("error", () => {});
  await connectRedis(redis);
  clients.push(redis);
  return redis;
}

async function replicating(from: RedisServer, to: RedisServer): Promise<void> {
  const redis = await client(to.url);
  await redis.replicaof("127.0.0.1", String(from.port));
  await waitFor(async () => /master_link_status:up/.test(await redis.info("replication")), {
    message: "the replica never caught up",
  });
}

/** WAITs the master has run so far (INFO commandstats). */
async function waitsRun(redis: RedisClient): Promise<number> {
  return Number(/cmdstat_wait:calls=(\d+)/.exec(await redis.info("commandstats"))?.[1] ?? 0);
}

const fixed = (replicas: number): AcknowledgementPolicy => ({ ...NO_REPLICAS, required: () => replicas });

// Long enough for a replica on a loaded machine to answer; the cases that expect no answer pass a short one.
function acknowledgements(redis: RedisClient, policy: AcknowledgementPolicy, timeoutMs = 3_000) {
  return new Acknowledgements({ masters: new Masters(redis), policy, timeoutMs, aof: false });
}

const increment = (key: string) => (connection: Redis) => connection.hincrby("acks", key, 1);

function watch(redis: RedisClient, options: { aof?: boolean } = {}) {
  const { logger, lines } = captureLogger();
  const unsupported: string[] = [];
  const replicas = new ReplicaWatch({
    redis,
    replicas: "auto",
    aof: options.aof ?? false,
    intervalMs: 60_000,
    logger,
    onUnsupportedAtStart: (message) => unsupported.push(message),
  });
  return { replicas, lines, unsupported };
}

beforeAll(async () => {
  [master, replica] = await Promise.all([
    startRedis({ appendOnly: false }),
    startRedis({ appendOnly: false }),
  ]);
  await replicating(master, replica);
});
afterAll(async () => {
  for (const redis of clients) redis.disconnect();
  await Promise.all([master?.destroy(), replica?.destroy()]);
});

describe("Acknowledgements", () => {
  it("confirms a turn's writes once the replica holds them, with one WAIT for all of them", async () => {
    const redis = await client(master.url);
    const acks = acknowledgements(redis, fixed(1));
    const before = await waitsRun(redis);

    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => acks.write("acks", increment(`k${i}`))),
    );

    expect(results.every(({ confirmed }) => confirmed)).toBe(true);
    expect(await waitsRun(redis)).toBe(before + 1);
    const onReplica = await client(replica.url);
    expect(await onReplica.hget("acks", "k49")).toBe("1");
  });

  it("answers unconfirmed while the replica is paused, one WAIT out at a time however many turns write", async () => {
    const redis = await client(master.url);
    const acks = acknowledgements(redis, fixed(1), 200);
    const before = await waitsRun(redis);
    replica.signal("SIGSTOP");
    try {
      const turns: Promise<{ confirmed: boolean }>[] = [];
      for (let turn = 0; turn < 5; turn++) {
        turns.push(acks.write("acks", increment(`paused${turn}`)));
        await new Promise((resolve) => setImmediate(resolve));
      }
      const results = await Promise.all(turns);
      expect(results.map(({ confirmed }) => confirmed)).toEqual([false, false, false, false, false]);
      // The first turn's WAIT, then one for the four turns that came while it was out.
      expect(await waitsRun(redis)).toBe(before + 2);
    } finally {
      replica.signal("SIGCONT");
    }
  });

  it("confirms a replay only once the first request's write is on the replica, whichever connection made it", async () => {
    const keyspace = new Keyspace(`replay${Date.now()}`, 1);
    const shard = keyspace.shards[0];
    if (shard === undefined) throw new Error("no shard");
    const record = keyspace.idempotencyRecord(shard, "client", "request-1");
    const limits = { ttlSeconds: 60, maxRecordsInShard: 1_000 };
    const first = new Scripts(await client(master.url), keyspace);
    const retry = new Scripts(
      await client(master.url),
      keyspace,
      acknowledgements(await client(master.url), fixed(1), 300),
    );

    replica.signal("SIGSTOP");
    try {
      // The first request is applied on one connection, and its answer lost; the retry comes on another.
      expect((await first.incrementOnce(record, [{ key: "k", value: 1 }], "body", limits)).value).toEqual({
        kind: "applied",
      });
      const replay = await retry.incrementOnce(record, [{ key: "k", value: 1 }], "body", limits);
      expect(replay).toEqual({ value: { kind: "replayed" }, confirmed: false });
    } finally {
      replica.signal("SIGCONT");
    }
    await waitFor(
      async () => (await retry.incrementOnce(record, [{ key: "k", value: 1 }], "body", limits)).confirmed,
      {
        message: "the replay was never confirmed once the replica ran again",
      },
    );
  });
});

describe("ReplicaWatch (REDIS_WAIT_REPLICAS=auto)", () => {
  it("waits for none on a Redis without a replica, and costs it no WAIT", async () => {
    const alone = await startRedis({ appendOnly: false });
    try {
      const redis = await client(alone.url);
      const { replicas } = watch(redis);
      await replicas.check();
      const acks = new Acknowledgements({
        masters: new Masters(redis),
        policy: replicas,
        timeoutMs: 300,
        aof: false,
      });

      const results = await Promise.all([
        acks.write("acks", increment("a")),
        acks.write("acks", increment("b")),
      ]);

      expect(results.every(({ confirmed }) => confirmed)).toBe(true);
      expect(await waitsRun(redis)).toBe(0);
    } finally {
      await alone.destroy();
    }
  });

  it("waits for one on a master with a replica, says so in its gauges, and warns that min-replicas-to-write is not set", async () => {
    const redis = await client(master.url);
    const { replicas, lines } = watch(redis);
    const registry = new Registry();
    replicas.register(registry);
    await replicas.check();

    const samples = parseMetrics(await registry.metrics());
    const node = `127.0.0.1:${master.port}`;
    expect(family(samples, "tally_redis_replicas")).toEqual([{ labels: { node }, value: 1 }]);
    expect(family(samples, "tally_redis_wait_replicas")).toEqual([{ labels: { node }, value: 1 }]);

    expect(replicas.readings).toMatchObject([{ connected: 1, promotable: 1, fenced: false }]);
    expect(lines.find((line) => line.msg.includes("min-replicas-to-write is not set"))).toMatchObject({
      level: "warn",
      replicas: 1,
      waitReplicas: 1,
    });
  });

  it("waits for a replica that attached since the last reading, before any reading sees it", async () => {
    const fresh = await startRedis({ appendOnly: false });
    const second = await startRedis({ appendOnly: false });
    try {
      const redis = await client(fresh.url);
      const { replicas } = watch(redis);
      await replicas.check();
      const acks = new Acknowledgements({
        masters: new Masters(redis),
        policy: replicas,
        timeoutMs: 3_000,
        aof: false,
      });
      await acks.write("acks", increment("before"));
      expect(await waitsRun(redis)).toBe(0);

      await replicating(fresh, second);
      // A round shows the replica online (ROLE); the one after waits for it. No reading happened meanwhile.
      await acks.write("acks", increment("seen"));
      const confirmed = await acks.write("acks", increment("after"));

      expect(confirmed.confirmed).toBe(true);
      expect(await waitsRun(redis)).toBeGreaterThanOrEqual(1);
      expect(await (await client(second.url)).hget("acks", "after")).toBe("1");
    } finally {
      await Promise.all([fresh.destroy(), second.destroy()]);
    }
  });

  it("refuses REDIS_WAIT_AOF at start on a Redis older than 7.2", async (context) => {
    const redis = await client(master.url);
    const version = /redis_version:([\d.]+)/.exec(await redis.info("server"))?.[1] ?? "";
    const [major = 0, minor = 0] = version.split(".").map(Number);
    if (major * 100 + minor >= 702) context.skip(`this Redis (${version}) has WAITAOF`);
    const { replicas, unsupported } = watch(redis, { aof: true });

    await replicas.check();

    expect(unsupported).toEqual([
      `REDIS_WAIT_AOF=true needs WAITAOF, which Redis 7.2 brought; ${replicas.readings[0]?.node} runs ${version}. Upgrade Redis, or unset REDIS_WAIT_AOF`,
    ]);
  });
});

// WAITAOF came with Redis 7.2; Debian's Redis is 7.0, so Valkey (a Redis 7.2 fork, from bookworm-backports)
// stands in where it is installed.
const valkey = findOnPath("valkey-server");

describe.skipIf(valkey === null)("REDIS_WAIT_AOF on a server with WAITAOF (Valkey)", () => {
  let aofMaster: RedisServer;
  let aofReplica: RedisServer;
  beforeAll(async () => {
    const binary = valkey ?? "valkey-server";
    // appendfsync always: with everysec a WAITAOF waits up to a second for the next fsync.
    aofMaster = await startRedis({ binary, appendOnly: true, args: ["--appendfsync", "always"] });
    aofReplica = await startRedis({
      binary,
      appendOnly: true,
      args: ["--appendfsync", "always", "--replicaof", "127.0.0.1", String(aofMaster.port)],
    });
    await waitFor(async () => /state=online/.test(await (await client(aofMaster.url)).info("replication")), {
      message: "the replica never came online",
    });
  });
  afterAll(async () => {
    await Promise.all([aofMaster?.destroy(), aofReplica?.destroy()]);
  });

  it("confirms writes once the master and the replica have fsynced them, and not while the replica is paused", async () => {
    const redis = await client(aofMaster.url);
    const { replicas, unsupported } = watch(redis, { aof: true });
    await replicas.check();
    expect(unsupported).toEqual([]);
    const waitingFor = (timeoutMs: number) =>
      new Acknowledgements({ masters: new Masters(redis), policy: fixed(1), timeoutMs, aof: true });

    expect(await waitingFor(3_000).write("acks", increment("synced"))).toEqual({ value: 1, confirmed: true });
    aofReplica.signal("SIGSTOP");
    try {
      expect(await waitingFor(300).write("acks", increment("unsynced"))).toEqual({
        value: 1,
        confirmed: false,
      });
    } finally {
      aofReplica.signal("SIGCONT");
    }
    expect(Number(/cmdstat_waitaof:calls=(\d+)/.exec(await redis.info("commandstats"))?.[1])).toBe(2);
  });

  it("refuses REDIS_WAIT_AOF at start where the master's appendonly is off", async () => {
    const noAof = await startRedis({ binary: valkey ?? "valkey-server", appendOnly: false });
    try {
      const { replicas, unsupported } = watch(await client(noAof.url), { aof: true });
      await replicas.check();
      expect(unsupported).toEqual([
        `REDIS_WAIT_AOF=true waits for the master's own fsync, but appendonly is off on ${replicas.readings[0]?.node}. Turn appendonly on, or unset REDIS_WAIT_AOF`,
      ]);
    } finally {
      await noAof.destroy();
    }
  });
});
