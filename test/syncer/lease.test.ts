import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it, onTestFinished } from "vitest";
import type { RedisClient } from "../../lib/redis/client.ts";
import { Keyspace } from "../../lib/redis/keyspace.ts";
import { Scripts } from "../../lib/redis/scripts.ts";
import { LeaderLease } from "../../syncer/lease.ts";
import type { Syncer } from "../../syncer/syncer.ts";
import { waitFor } from "../harness/fixtures.ts";
import { captureLogger } from "../support/logger.ts";
import {
  addDeltas,
  createSyncer,
  isDrained,
  leaseKey,
  readCounters,
  useSyncerEnv,
} from "../support/syncer.ts";

// The lease only keeps standbys idle (correctness never depends on it, see concurrency.test.ts), but a
// standby must take over after the leader's death, at once after its graceful stop, and never alongside
// a healthy leader.

const env = useSyncerEnv();

/** Two leases on one key, each with its own connection, as two syncer processes would have. */
async function contenders(ttlMs: number): Promise<{ key: string; a: LeaderLease; b: LeaderLease }> {
  const keyspace = new Keyspace(env.newPrefix(), 1);
  const key = keyspace.lease;
  const lease = (redis: RedisClient) => new LeaderLease({ scripts: new Scripts(redis, keyspace), ttlMs });
  const a = lease(await env.openRedis());
  const b = lease(await env.openRedis());
  onTestFinished(async () => {
    await a.release();
    await b.release();
  });
  return { key, a, b };
}

describe("LeaderLease", () => {
  it("is held by exactly one of two contenders", async () => {
    const { key, a, b } = await contenders(5_000);

    const [aHolds, bHolds] = await Promise.all([a.claim(), b.claim()]);

    expect([aHolds, bHolds].filter(Boolean)).toHaveLength(1);
    expect([a.isHeld(), b.isHeld()]).toEqual([aHolds, bHolds]);
    const holder = aHolds ? a : b;
    expect(await env.redis.get(key)).toBe(holder.holderId);
    // Renewing keeps it; the other keeps failing.
    expect(await holder.claim()).toBe(true);
    expect(await (aHolds ? b : a).claim()).toBe(false);
  });

  it("passes to the other contender on its next claim once the holder releases it", async () => {
    const { key, a, b } = await contenders(5_000);
    expect(await a.claim()).toBe(true);
    expect(await b.claim()).toBe(false);

    await a.release();

    expect(a.isHeld()).toBe(false);
    expect(await env.redis.get(key)).toBeNull();
    expect(await b.claim()).toBe(true);
    expect(await a.claim()).toBe(false);
  });

  it("passes to the other contender after the TTL when the holder stops renewing", async () => {
    const { key, a, b } = await contenders(300);
    expect(await a.claim()).toBe(true);
    // a dies: it never claims again.

    await waitFor(() => b.claim(), { message: "b never took over the abandoned lease" });

    expect(await env.redis.get(key)).toBe(b.holderId);
    // a judges by its own clock that the TTL it secured has run out, without asking Redis.
    await waitFor(async () => !a.isHeld(), { message: "a still believes it holds the lease" });
    expect(await a.claim()).toBe(false);
  });

  it("keeps the lease while start() renews it, and reports acquired and lost", async () => {
    const { a, b } = await contenders(450);
    const events: string[] = [];
    a.on("acquired", () => events.push("acquired"));
    a.on("lost", () => events.push("lost"));

    a.start();
    await waitFor(async () => a.isHeld());
    // More than a TTL passes; the renewals (every TTL/3) keep b out the whole time.
    for (let i = 0; i < 4; i++) {
      expect(await b.claim()).toBe(false);
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
    await a.release();

    expect(events).toEqual(["acquired", "lost"]);
    expect(await b.claim()).toBe(true);
  });

  it("stays released when a claim was still in flight at release()", async () => {
    const { key, a, b } = await contenders(5_000);
    expect(await a.claim()).toBe(true);
    const lost = new Promise<void>((resolve) => a.once("lost", resolve));

    // The renewal timer may be mid-claim when stop() releases the lease: that claim's reply must not
    // resurrect a lease that was just given up.
    const renewal = a.claim();
    await a.release();
    await renewal;

    expect(a.isHeld()).toBe(false);
    await lost;
    expect(await env.redis.get(key)).toBeNull();
    expect(await b.claim()).toBe(true);
  });

  it("does not keep the lease in Redis when released while its first claim is in flight", async () => {
    const { key, a, b } = await contenders(5_000);

    const first = a.claim();
    await a.release();
    await first;

    expect(a.isHeld()).toBe(false);
    expect(await env.redis.get(key)).toBeNull();
    expect(await b.claim()).toBe(true);
  });
});

describe("Syncer and its lease", () => {
  async function startedSyncer(prefix: string, intervalMs: number, leaseTtlMs = 300): Promise<Syncer> {
    const syncer = createSyncer({
      redis: await env.openRedis(),
      pool: env.openPool(),
      prefix,
      intervalMs,
      leaseTtlMs,
    });
    onTestFinished(() => syncer.stop());
    syncer.start();
    return syncer;
  }

  it("stop() flushes what was written just before it, then releases the lease at once", async () => {
    const prefix = env.newPrefix();
    // An interval far longer than the test: only the first cycle (on becoming leader) and stop()'s final
    // flush can move anything to Postgres.
    const syncer = await startedSyncer(prefix, 60_000);
    await waitFor(async () => syncer.isLeader && syncer.lastReport !== undefined, {
      message: "the syncer never led a cycle",
    });
    await addDeltas(env.redis, prefix, [
      ["late", 7],
      ["later", -3],
    ]);
    const standby = new LeaderLease({ scripts: new Scripts(env.redis, new Keyspace(prefix, 1)), ttlMs: 300 });
    onTestFinished(() => standby.release());
    expect(await standby.claim()).toBe(false);

    await syncer.stop();

    expect(await readCounters(env.pool)).toEqual(
      new Map([
        ["late", 7n],
        ["later", -3n],
      ]),
    );
    expect(await isDrained(env.redis, prefix)).toBe(true);
    expect(syncer.isLeader).toBe(false);
    // Released, not left to expire: the standby takes over on its very next claim.
    expect(await standby.claim()).toBe(true);
  });

  it("logs a claim Redis refuses, once for the streak, and never leads on it", async () => {
    const prefix = env.newPrefix();
    // A key of the wrong type: every claim is answered with WRONGTYPE.
    await env.redis.hset(leaseKey(prefix), "not", "a lease");
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
    await waitFor(async () => lines.some((line) => line.msg === "cannot claim or renew the leader lease"));
    // A standby polls every TTL/12: some twenty failed claims in the next half second, one line.
    await sleep(500);
    const claimLines = lines.filter((line) =>
      String(line.msg).startsWith("cannot claim or renew the leader lease"),
    );
    expect(claimLines).toEqual([
      expect.objectContaining({ level: "warn", reason: expect.stringContaining("WRONGTYPE") }),
    ]);
    expect(syncer.isLeader).toBe(false);
  });

  it("a standby stays idle while the leader lives, and takes over when the leader stops", async () => {
    const prefix = env.newPrefix();
    // A TTL with room for a busy test machine: the standby must not see the healthy leader's lease lapse.
    const first = await startedSyncer(prefix, 50, 1_500);
    await waitFor(async () => first.isLeader && first.lastReport !== undefined);
    const second = await startedSyncer(prefix, 50, 1_500);
    await addDeltas(env.redis, prefix, [["a", 1]]);
    await waitFor(async () => (await readCounters(env.pool)).get("a") === 1n);
    expect(second.isLeader).toBe(false);
    expect(second.lastReport).toBeUndefined();

    await first.stop();
    await addDeltas(env.redis, prefix, [["a", 2]]);

    await waitFor(async () => (await readCounters(env.pool)).get("a") === 3n, {
      message: "the standby did not take over",
    });
    expect(second.isLeader).toBe(true);
  });

  it("a standby takes over after the TTL when the leader dies without releasing", async () => {
    const prefix = env.newPrefix();
    const leaderRedis = await env.openRedis();
    const leader = createSyncer({
      redis: leaderRedis,
      pool: env.openPool(),
      prefix,
      intervalMs: 50,
      leaseTtlMs: 300,
    });
    onTestFinished(() => leader.stop());
    leader.start();
    await waitFor(async () => leader.isLeader);
    const standby = await startedSyncer(prefix, 50);

    // Cut off from Redis: it can neither renew nor release, exactly like a dead process.
    leaderRedis.disconnect();
    await addDeltas(env.redis, prefix, [["b", 5]]);

    await waitFor(async () => (await readCounters(env.pool)).get("b") === 5n, {
      message: "the standby did not take over after the TTL",
    });
    expect(standby.isLeader).toBe(true);
    expect(leader.isLeader).toBe(false);
  });
});
