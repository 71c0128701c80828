import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { describe, expect, it, onTestFinished } from "vitest";
import { Keyspace, shardKeys } from "../../lib/redis/keyspace.ts";
import type { SyncStep } from "../../syncer/flush-context.ts";
import { SyncerMetrics, syncerReadiness } from "../../syncer/metrics.ts";
import { Syncer } from "../../syncer/syncer.ts";
import { freePort } from "../../tools/servers/ports.ts";
import { waitFor } from "../harness/fixtures.ts";
import { family, parseMetrics, type Sample, sampleValue } from "../support/metrics.ts";
import { addDeltas, silentLogger, useSyncerEnv } from "../support/syncer.ts";

// The syncer's Prometheus metrics, fed by its cycle reports and read at scrape time, against the shared
// Redis and this file's own database.

const INT64_MAX = 2n ** 63n - 1n;

/** Redis as readiness sees it when its memory is fine (the process-level tests cover the other cases). */
const NO_MEMORY_PROBLEM = { problem: () => undefined };

const env = useSyncerEnv();

/** A syncer with its own clients, as a process has, and its metrics wired the way startSyncer does. */
async function syncerWithMetrics(
  prefix: string,
  options: { crashAt?: SyncStep; leaseTtlMs?: number; pool?: pg.Pool } = {},
): Promise<{ syncer: Syncer; metrics: SyncerMetrics; scrape(): Promise<Sample[]> }> {
  const redis = await env.openRedis();
  const metrics = new SyncerMetrics({ shards: 1, idempotencyMaxRecords: 5_000 });
  const syncer = new Syncer({
    redis,
    concurrency: 2,
    pool: options.pool ?? env.openPool(),
    logger: silentLogger,
    keyspace: new Keyspace(prefix, 1),
    // Cycles run when a test says so, or once when a syncer takes a shard.
    intervalMs: 60_000,
    scanCount: 1_000,
    leaseTtlMs: options.leaseTtlMs ?? 1_000,
    onStep: (step) => {
      if (step === options.crashAt) throw new Error(`injected crash at ${step}`);
    },
  });
  metrics.watch(syncer);
  return { syncer, metrics, scrape: async () => parseMetrics(await metrics.registry.metrics()) };
}

describe("syncer metrics", () => {
  it("count cycles, batches, their keys and deltas, and quarantined deltas", async () => {
    const prefix = env.newPrefix();
    const { syncer, scrape } = await syncerWithMetrics(prefix);
    await env.pool.query("INSERT INTO counters (key, value, updated_at) VALUES ($1, $2, now())", [
      "near-max",
      (INT64_MAX - 5n).toString(),
    ]);
    await addDeltas(env.redis, prefix, [
      ["a", 5],
      ["b", -3],
      // Cancels out: not in the batch.
      ["c", 0],
      // Would leave bigint: set aside, still counted in the batch's deltas.
      ["near-max", 10],
    ]);

    expect((await syncer.runCycle()).failures).toEqual([]);
    // Nothing pending: a cycle, but no batch.
    expect((await syncer.runCycle()).failures).toEqual([]);

    const samples = await scrape();
    expect(family(samples, "tally_syncer_cycles_total")).toEqual([
      { labels: { result: "ok" }, value: 2 },
      { labels: { result: "failed" }, value: 0 },
    ]);
    expect(family(samples, "tally_syncer_batches_total")).toEqual([
      { labels: { outcome: "applied" }, value: 1 },
      { labels: { outcome: "already_applied" }, value: 0 },
      { labels: { outcome: "superseded" }, value: 0 },
    ]);
    expect(sampleValue(samples, "tally_syncer_batch_keys_count")).toBe(1);
    expect(sampleValue(samples, "tally_syncer_batch_keys_sum")).toBe(3);
    expect(sampleValue(samples, "tally_syncer_batch_keys_bucket", { le: "1" })).toBe(0);
    expect(sampleValue(samples, "tally_syncer_batch_keys_bucket", { le: "10" })).toBe(1);
    expect(sampleValue(samples, "tally_syncer_batch_delta_abs_total")).toBe(5 + 3 + 10);
    expect(sampleValue(samples, "tally_syncer_quarantined_deltas_total")).toBe(1);
    expect(sampleValue(samples, "tally_syncer_cycle_duration_seconds_count")).toBe(2);
    const seconds = sampleValue(samples, "tally_syncer_cycle_duration_seconds_sum") ?? 0;
    expect(seconds).toBeGreaterThan(0);
    expect(seconds).toBeLessThan(10);
  });

  it("count the Idempotency-Key records each cycle, dropping the expired ones from the index", async () => {
    const prefix = env.newPrefix();
    const { syncer, scrape } = await syncerWithMetrics(prefix);
    const index = shardKeys(prefix, 0).idempotencyIndex;
    const now = Date.now();
    await env.redis.zadd(index, now - 1_000, "expired", now + 60_000, "live-1", now + 60_000, "live-2");

    expect((await syncer.runCycle()).idempotencyRecords).toBe(2);
    expect(sampleValue(await scrape(), "tally_idempotency_records")).toBe(2);
    expect(await env.redis.zrange(index, 0, -1)).toEqual(["live-1", "live-2"]);
  });

  it("count a failed cycle, and a batch the ledger already had as already_applied", async () => {
    const prefix = env.newPrefix();
    await addDeltas(env.redis, prefix, [["a", 1]]);
    const crashed = await syncerWithMetrics(prefix, { crashAt: "after-commit" });
    expect((await crashed.syncer.runCycle()).failures).toHaveLength(1);
    const crashedSamples = await crashed.scrape();
    expect(sampleValue(crashedSamples, "tally_syncer_cycles_total", { result: "failed" })).toBe(1);

    const successor = await syncerWithMetrics(prefix);
    expect((await successor.syncer.runCycle()).failures).toEqual([]);
    const samples = await successor.scrape();
    expect(family(samples, "tally_syncer_batches_total")).toEqual([
      { labels: { outcome: "applied" }, value: 0 },
      { labels: { outcome: "already_applied" }, value: 1 },
      { labels: { outcome: "superseded" }, value: 0 },
    ]);
    expect(sampleValue(samples, "tally_syncer_batch_delta_abs_total")).toBe(0);
    expect(sampleValue(samples, "tally_syncer_cycles_total", { result: "ok" })).toBe(1);
  });

  it("export the settings the alert rules compare with, and whether the last cycle reached Postgres", async () => {
    const prefix = env.newPrefix();
    await addDeltas(env.redis, prefix, [["a", 1]]);
    const unreachable = new pg.Pool({
      connectionString: `postgres://postgres@127.0.0.1:${await freePort()}/tally`,
      connectionTimeoutMillis: 1_000,
    });
    onTestFinished(() => unreachable.end());
    const cut = await syncerWithMetrics(prefix, { pool: unreachable });
    expect(sampleValue(await cut.scrape(), "tally_syncer_postgres_up")).toBe(1);
    expect((await cut.syncer.runCycle()).failures).toHaveLength(1);
    const samples = await cut.scrape();
    expect(sampleValue(samples, "tally_syncer_postgres_up")).toBe(0);
    expect(sampleValue(samples, "tally_sync_shards")).toBe(1);
    expect(sampleValue(samples, "tally_idempotency_records_max")).toBe(5_000);

    const reaching = await syncerWithMetrics(prefix);
    expect((await reaching.syncer.runCycle()).failures).toEqual([]);
    expect(sampleValue(await reaching.scrape(), "tally_syncer_postgres_up")).toBe(1);
  });

  it("export the shards held and, over them, a staleness computed at scrape time; a syncer holding none is ready", async () => {
    const prefix = env.newPrefix();
    const first = await syncerWithMetrics(prefix);
    const second = await syncerWithMetrics(prefix);
    onTestFinished(async () => {
      await first.syncer.stop();
      await second.syncer.stop();
    });
    // One shard: the second syncer's fair share is that shard too, which the first holds.
    const shardsHeld = async (s: { scrape(): Promise<Sample[]> }) =>
      sampleValue(await s.scrape(), "tally_syncer_shards");
    const staleness = async (s: { scrape(): Promise<Sample[]> }) =>
      sampleValue(await s.scrape(), "tally_syncer_staleness_seconds") ?? Number.NaN;

    expect(await shardsHeld(first)).toBe(0);
    first.syncer.start();
    await waitFor(async () => (await shardsHeld(first)) === 1, {
      message: "the first syncer never took the shard",
    });
    // A syncer that takes a shard syncs it at once; Postgres is then up to date as of that cycle.
    await waitFor(async () => first.syncer.lastReport, {
      message: "the first syncer never ran its first cycle",
    });
    second.syncer.start();
    await sleep(300);
    expect(await shardsHeld(second)).toBe(0);

    // No cycle in between (the interval is a minute): the staleness grows with the clock, read per scrape.
    const before = await staleness(first);
    await sleep(300);
    const after = await staleness(first);
    expect(before).toBeLessThan(5);
    expect(after - before).toBeGreaterThanOrEqual(0.25);
    expect(syncerReadiness(first.syncer, NO_MEMORY_PROBLEM)).toMatchObject({
      ready: true,
      detail: { shards: [0] },
    });
    // A syncer holding no shard reports no staleness of its own, and is ready.
    expect(await staleness(second)).toBe(0);
    expect(syncerReadiness(second.syncer, NO_MEMORY_PROBLEM)).toEqual({
      ready: true,
      detail: { shards: [], stalenessSeconds: 0 },
    });

    // The first syncer stops (releasing its lease): the second takes the shard, and the gauges follow.
    await first.syncer.stop();
    expect(await shardsHeld(first)).toBe(0);
    expect(await staleness(first)).toBe(0);
    await waitFor(async () => (await shardsHeld(second)) === 1, {
      message: "the second syncer never took over",
    });
  });
});
