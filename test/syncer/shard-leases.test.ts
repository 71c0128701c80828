import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it, onTestFinished } from "vitest";
import { Keyspace } from "../../lib/redis/keyspace.ts";
import { Scripts } from "../../lib/redis/scripts.ts";
import { ShardLeases } from "../../syncer/shard-leases.ts";
import type { Syncer } from "../../syncer/syncer.ts";
import { waitFor } from "../harness/fixtures.ts";
import { captureLogger } from "../support/logger.ts";
import { addDeltas, createSyncer, isDrained, readCounters, useSyncerEnv } from "../support/syncer.ts";

// The leases only keep syncers off each other's shards (correctness never depends on them, see
// concurrency.test.ts), but every shard must have a syncer: shares are fair, a dead syncer's shards are taken
// after the TTL, a stopped one's at once, and a healthy syncer's never.

const env = useSyncerEnv();

/** Syncers' leases on `shards` shards, each with its own connection, as syncer processes would have them. */
async function contenders(
  ttlMs: number,
  shards: number,
  count = 2,
  isBusy?: (shard: number) => boolean,
): Promise<{ keyspace: Keyspace; leases: ShardLeases[] }> {
  const keyspace = new Keyspace(env.newPrefix(), shards);
  const leases: ShardLeases[] = [];
  for (let i = 0; i < count; i++) {
    const scripts = new Scripts(await env.openRedis(), keyspace);
    leases.push(new ShardLeases({ scripts, shards: keyspace.shards, ttlMs, isBusy }));
  }
  onTestFinished(async () => {
    for (const lease of leases) await lease.release();
  });
  return { keyspace, leases };
}

const heldBy = (lease: ShardLeases) => lease.held().map((shard) => shard.shard);

/** Who Redis says holds each shard's lease. */
async function holders(keyspace: Keyspace): Promise<(string | null)[]> {
  return Promise.all(keyspace.shards.map((shard) => env.redis.get(shard.lease)));
}

describe("ShardLeases", () => {
  it("one syncer alone holds every shard", async () => {
    const { keyspace, leases } = await contenders(5_000, 4, 1);
    const [only] = leases;
    if (only === undefined) throw new Error("no lease");
    expect(await only.claim()).toBe(4);
    expect(heldBy(only)).toEqual([0, 1, 2, 3]);
    expect(await holders(keyspace)).toEqual([only.holderId, only.holderId, only.holderId, only.holderId]);
  });

  it("two syncers share the shards, half each, and never hold one shard both", async () => {
    const { keyspace, leases } = await contenders(5_000, 4);
    const [a, b] = leases;
    if (a === undefined || b === undefined) throw new Error("two leases expected");
    // Both have said they are alive before either claims: each one's share is 2.
    await Promise.all([a.claim(), b.claim()]);
    for (let round = 0; round < 3; round++) await Promise.all([a.claim(), b.claim()]);
    expect(heldBy(a)).toHaveLength(2);
    expect(heldBy(b)).toHaveLength(2);
    expect([...heldBy(a), ...heldBy(b)].sort()).toEqual([0, 1, 2, 3]);
    const owners = await holders(keyspace);
    for (const shard of heldBy(a)) expect(owners[shard]).toBe(a.holderId);
    for (const shard of heldBy(b)) expect(owners[shard]).toBe(b.holderId);
  });

  it("a syncer that joins gets its share: the other gives up what is over its own at its next round", async () => {
    const { leases } = await contenders(5_000, 4);
    const [a, b] = leases;
    if (a === undefined || b === undefined) throw new Error("two leases expected");
    await a.claim();
    expect(heldBy(a)).toEqual([0, 1, 2, 3]);
    const released: number[][] = [];
    const lost: number[][] = [];
    a.on("released", (shards) => released.push(shards));
    a.on("lost", (shards) => lost.push(shards));

    expect(await b.claim()).toBe(2);
    expect(heldBy(b)).toEqual([]);
    await a.claim();
    expect(heldBy(a)).toHaveLength(2);
    // Given up on purpose, not lost.
    expect(released.flat()).toHaveLength(2);
    expect(lost).toEqual([]);
    await b.claim();
    expect([...heldBy(a), ...heldBy(b)].sort()).toEqual([0, 1, 2, 3]);
  });

  it("does not give up a shard it is applying; it goes once the batch is done", async () => {
    const busy = new Set([0, 1, 2, 3]);
    const { leases } = await contenders(5_000, 4, 2, (shard) => busy.has(shard));
    const [a, b] = leases;
    if (a === undefined || b === undefined) throw new Error("two leases expected");
    await a.claim();
    await b.claim();
    await a.claim();
    // Busy (in a's leases' eyes: the callback is shared, b holds nothing): a keeps all four.
    expect(heldBy(a)).toEqual([0, 1, 2, 3]);
    busy.clear();
    await a.claim();
    expect(heldBy(a)).toHaveLength(2);
  });

  it("renews and claims the other shards when one shard's lease call fails (a master down, on a cluster)", async () => {
    for (let good = 0; good < 4; good++) {
      const { keyspace, leases } = await contenders(5_000, 4, 1);
      const [only] = leases;
      if (only === undefined) throw new Error("no lease");
      // Every lease but one is a key of the wrong type: its calls fail with WRONGTYPE.
      for (const shard of keyspace.shards) {
        if (shard.shard !== good) await env.redis.hset(shard.lease, "not", "a lease");
      }
      await only.claim();
      expect(heldBy(only)).toEqual([good]);
    }
  });

  it("when one releases, the other takes every shard on its next round", async () => {
    const { keyspace, leases } = await contenders(5_000, 4);
    const [a, b] = leases;
    if (a === undefined || b === undefined) throw new Error("two leases expected");
    await Promise.all([a.claim(), b.claim()]);
    await Promise.all([a.claim(), b.claim()]);

    await a.release();

    expect(heldBy(a)).toEqual([]);
    expect(await b.claim()).toBe(4);
    expect(heldBy(b)).toEqual([0, 1, 2, 3]);
    expect(await holders(keyspace)).toEqual([b.holderId, b.holderId, b.holderId, b.holderId]);
  });

  it("after the TTL, the others take the shards of one that stops renewing", async () => {
    const { leases } = await contenders(300, 4);
    const [a, b] = leases;
    if (a === undefined || b === undefined) throw new Error("two leases expected");
    await Promise.all([a.claim(), b.claim()]);
    await Promise.all([a.claim(), b.claim()]);
    // a dies: it never claims again.

    await waitFor(
      async () => {
        await b.claim();
        return heldBy(b).length === 4;
      },
      { message: "b never took over the abandoned shards" },
    );
    // a judges by its own clock that the TTLs it secured have run out, without asking Redis: lost, not
    // released.
    await waitFor(async () => heldBy(a).length === 0, { message: "a still believes it holds shards" });
    const lost = new Promise<number[]>((resolve) => a.once("lost", resolve));
    // Its next round (it woke up) reports the lapse.
    await a.claim();
    expect((await lost).length).toBeGreaterThan(0);
  });

  it("stays released when a claim was still in flight at release()", async () => {
    const { keyspace, leases } = await contenders(5_000, 2);
    const [a, b] = leases;
    if (a === undefined || b === undefined) throw new Error("two leases expected");
    await a.claim();
    const renewal = a.claim();
    await a.release();
    await renewal;

    expect(heldBy(a)).toEqual([]);
    expect(await holders(keyspace)).toEqual([null, null]);
    await b.claim();
    expect(heldBy(b)).toEqual([0, 1]);
  });
});

describe("Syncer and its leases", () => {
  async function startedSyncer(
    prefix: string,
    intervalMs: number,
    leaseTtlMs = 300,
    shards = 1,
  ): Promise<Syncer> {
    const syncer = createSyncer({
      redis: await env.openRedis(),
      pool: env.openPool(),
      prefix,
      intervalMs,
      leaseTtlMs,
      shards,
    });
    onTestFinished(() => syncer.stop());
    syncer.start();
    return syncer;
  }

  it("stop() flushes what was written just before it, then releases the leases at once", async () => {
    const prefix = env.newPrefix();
    // An interval far longer than the test: only the first cycle (on taking the shard) and stop()'s final
    // flush can move anything to Postgres.
    const syncer = await startedSyncer(prefix, 60_000);
    await waitFor(async () => syncer.heldShards.length === 1 && syncer.lastReport !== undefined, {
      message: "the syncer never ran a cycle",
    });
    await addDeltas(env.redis, prefix, [
      ["late", 7],
      ["later", -3],
    ]);
    const keyspace = new Keyspace(prefix, 1);
    const standby = new ShardLeases({
      scripts: new Scripts(env.redis, keyspace),
      shards: keyspace.shards,
      ttlMs: 300,
    });
    onTestFinished(() => standby.release());
    await standby.claim();
    expect(standby.held()).toEqual([]);

    await syncer.stop();

    expect(await readCounters(env.pool)).toEqual(
      new Map([
        ["late", 7n],
        ["later", -3n],
      ]),
    );
    expect(await isDrained(env.redis, prefix)).toBe(true);
    expect(syncer.heldShards).toEqual([]);
    // Released, not left to expire: the standby takes over on its very next round.
    await standby.claim();
    expect(standby.held().map((shard) => shard.shard)).toEqual([0]);
  });

  it("logs a claim Redis refuses, once for the streak, and never syncs on it", async () => {
    const prefix = env.newPrefix();
    // A key of the wrong type: every claim is answered with WRONGTYPE.
    await env.redis.hset(new Keyspace(prefix, 1).shards[0]?.lease ?? "", "not", "a lease");
    const { logger, lines } = captureLogger();
    const syncer = createSyncer({
      redis: await env.openRedis(),
      pool: env.openPool(),
      prefix,
      leaseTtlMs: 300,
      logger,
    });
    onTestFinished(() => syncer.stop());
    syncer.start();
    await waitFor(async () => lines.some((line) => line.msg === "cannot claim or renew the shards' leases"));
    // A standby polls every TTL/12: some twenty failed claims in the next half second, one line.
    await sleep(500);
    const claimLines = lines.filter((line) =>
      String(line.msg).startsWith("cannot claim or renew the shards' leases"),
    );
    expect(claimLines).toEqual([
      expect.objectContaining({ level: "warn", reason: expect.stringContaining("WRONGTYPE") }),
    ]);
    expect(syncer.heldShards).toEqual([]);
  });

  it("with one shard, a second syncer stays idle while the first lives, and takes over when it stops", async () => {
    const prefix = env.newPrefix();
    // A TTL with room for a busy test machine: the second must not see the healthy first one's lease lapse.
    const first = await startedSyncer(prefix, 50, 1_500);
    await waitFor(async () => first.heldShards.length === 1 && first.lastReport !== undefined);
    const second = await startedSyncer(prefix, 50, 1_500);
    await addDeltas(env.redis, prefix, [["a", 1]]);
    await waitFor(async () => (await readCounters(env.pool)).get("a") === 1n);
    expect(second.heldShards).toEqual([]);
    expect(second.lastReport).toBeUndefined();

    await first.stop();
    await addDeltas(env.redis, prefix, [["a", 2]]);

    await waitFor(async () => (await readCounters(env.pool)).get("a") === 3n, {
      message: "the second syncer did not take over",
    });
    expect(second.heldShards).toEqual([0]);
  });

  it("the others take a syncer's shards after the TTL when it dies without releasing", async () => {
    const prefix = env.newPrefix();
    const dyingRedis = await env.openRedis();
    const dying = createSyncer({
      redis: dyingRedis,
      pool: env.openPool(),
      prefix,
      intervalMs: 50,
      leaseTtlMs: 300,
    });
    onTestFinished(() => dying.stop());
    dying.start();
    await waitFor(async () => dying.heldShards.length === 1);
    const other = await startedSyncer(prefix, 50);

    // Cut off from Redis: it can neither renew nor release, exactly like a dead process.
    dyingRedis.disconnect();
    await addDeltas(env.redis, prefix, [["b", 5]]);

    await waitFor(async () => (await readCounters(env.pool)).get("b") === 5n, {
      message: "the other syncer did not take over after the TTL",
    });
    expect(other.heldShards).toEqual([0]);
    expect(dying.heldShards).toEqual([]);
  });

  it("skips a shard whose lease it lost after the cycle began, rather than work beside its new holder", async () => {
    const prefix = env.newPrefix();
    const keyspace = new Keyspace(prefix, 4);
    let stolen = false;
    const syncer = createSyncer({
      redis: await env.openRedis(),
      pool: env.openPool(),
      prefix,
      shards: 4,
      concurrency: 1,
      intervalMs: 60_000,
      leaseTtlMs: 300,
      onStep: async (step, shard) => {
        if (step !== "before-swap" || shard !== 0 || stolen) return;
        stolen = true;
        // Another syncer takes shards 1 to 3 while this one works on shard 0; its renewals then fail.
        for (const keys of keyspace.shards.slice(1)) await env.redis.set(keys.lease, "intruder", "PX", 5_000);
        await sleep(400);
      },
    });
    onTestFinished(() => syncer.stop());
    for (const shard of [0, 1, 2, 3]) await addDeltas(env.redis, prefix, [[`lost:${shard}`, 1]], shard);
    syncer.start();
    await waitFor(async () => syncer.lastReport !== undefined, { message: "no cycle ran" });
    expect(syncer.lastReport?.outcomes.map((outcome) => outcome.shard)).toEqual([0]);
    expect(syncer.lastReport?.shards).toEqual([0]);
    expect(await readCounters(env.pool)).toEqual(new Map([["lost:0", 1n]]));
    expect(syncer.heldShards).toEqual([0]);
  });

  it("two syncers split four shards, each applies its own, and every increment lands once", async () => {
    const prefix = env.newPrefix();
    const a = await startedSyncer(prefix, 50, 1_500, 4);
    const b = await startedSyncer(prefix, 50, 1_500, 4);
    await waitFor(async () => a.heldShards.length === 2 && b.heldShards.length === 2, {
      message: "the syncers did not settle on two shards each",
    });
    expect([...a.heldShards, ...b.heldShards].sort()).toEqual([0, 1, 2, 3]);
    const expected = new Map<string, bigint>();
    for (const shard of [0, 1, 2, 3]) {
      await addDeltas(env.redis, prefix, [[`split:${shard}`, shard + 1]], shard);
      expected.set(`split:${shard}`, BigInt(shard + 1));
    }
    await waitFor(async () => (await readCounters(env.pool)).size === 4, {
      message: "not every shard synced",
    });
    expect(await readCounters(env.pool)).toEqual(expected);
    // Each applied only the shards it held.
    const appliedBy = (syncer: Syncer) =>
      (syncer.lastReport?.outcomes ?? []).map((outcome) => outcome.shard).sort();
    expect(appliedBy(a)).toEqual(a.heldShards);
    expect(appliedBy(b)).toEqual(b.heldShards);
  });
});
