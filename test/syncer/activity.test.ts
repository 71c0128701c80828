import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { activityStreamKey, Keyspace } from "../../lib/redis/keyspace.ts";
import { Activity } from "../../syncer/activity/index.ts";
import { type CycleReport, Syncer } from "../../syncer/syncer.ts";
import { waitFor } from "../harness/fixtures.ts";
import { ActivityFixtures, readStream } from "../support/activity.ts";
import { captureLogger } from "../support/logger.ts";
import {
  addDeltas,
  expectDelta,
  nonZero,
  readCounters,
  readLedger,
  useSyncerEnv,
} from "../support/syncer.ts";

// Real syncer cycles on the shared Redis and this file's database, with the activity report wired in as
// syncer/process.ts wires it. Periods of a second (not a minute) so that several pass in a test.

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const STREAM_FIELDS = ["minute", "unique_keys", "delta_total", "batches", "partial", "emitted_at", "syncer"];

const env = useSyncerEnv();
const fixtures = new ActivityFixtures(env);

afterEach(async () => {
  await fixtures.cleanup();
});

describe("per-minute activity", () => {
  it("writes each period to the stream, the log and the webhook, with exact counts", async () => {
    const prefix = env.newPrefix();
    const hook = await fixtures.receiver((response) => response.writeHead(204).end());
    const periodMs = 1_000;
    const running = fixtures.run({
      prefix,
      intervalMs: 200,
      periodMs,
      webhook: { url: hook.url, timeoutMs: 5_000 },
    });
    const expected = new Map<string, bigint>();

    // ~2.6 s of writes: a small pool of keys, so keys repeat across batches within a period; negative
    // deltas; and a key that gets three times 2^53-1 within one batch (a delta only BigInt holds).
    const until = Date.now() + 2_600;
    for (let round = 0; Date.now() < until; round++) {
      const writes: [string, bigint][] = [
        [`k${round % 7}`, BigInt(round + 1)],
        [`k${(round * 3) % 11}`, -2n],
      ];
      if (round % 10 === 0) writes.push(["big", MAX_SAFE], ["big", MAX_SAFE], ["big", MAX_SAFE]);
      await addDeltas(env.redis, prefix, writes);
      for (const [key, delta] of writes) expectDelta(expected, key, delta);
      await sleep(30);
    }
    await running.stop(5_000);

    // Postgres got everything (the report is a side path; the sync itself is as always).
    expect(await readCounters(env.pool)).toEqual(nonZero(expected));

    const entries = await readStream(env.redis, activityStreamKey(prefix));
    expect(entries.length).toBeGreaterThanOrEqual(3);
    for (const { fields } of entries) expect(fields).toEqual(STREAM_FIELDS);

    // Consecutive periods, each once; the first joined mid-period (partial), a middle one seen whole.
    const minutes = entries.map(({ entry }) => Date.parse(entry.minute ?? ""));
    for (const [i, minute] of minutes.entries()) {
      expect(minute % periodMs).toBe(0);
      if (i > 0) expect(minute).toBe((minutes[i - 1] ?? 0) + periodMs);
    }
    expect(entries[0]?.entry.partial).toBe("true");
    expect(entries.slice(1, -1).map(({ entry }) => entry.partial)).toContain("false");

    // Independent expectation: the ledger's batches grouped by the period of their swap time, and the
    // distinct keys of the batches this syncer applied.
    const ledger = await readLedger(env.pool);
    const byPeriod = new Map<number, { deltaTotal: bigint; batches: number; keys: Set<string> }>();
    const periodOf = (at: Date) => Math.floor(at.getTime() / periodMs) * periodMs;
    for (const row of ledger) {
      const period = byPeriod.get(periodOf(row.swapped_at)) ?? {
        deltaTotal: 0n,
        batches: 0,
        keys: new Set(),
      };
      period.deltaTotal += BigInt(row.delta_sum);
      period.batches += 1;
      byPeriod.set(periodOf(row.swapped_at), period);
    }
    for (const batch of running.batches) {
      for (const key of batch.keys) byPeriod.get(periodOf(batch.swappedAt))?.keys.add(key);
    }
    expect(running.batches).toHaveLength(ledger.length);
    for (const { entry } of entries) {
      const period = byPeriod.get(Date.parse(entry.minute ?? ""));
      expect(entry).toMatchObject({
        delta_total: String(period?.deltaTotal ?? 0n),
        batches: String(period?.batches ?? 0),
        unique_keys: String(period?.keys.size ?? 0),
      });
      expect(Date.parse(entry.emitted_at ?? "")).toBeGreaterThanOrEqual(Date.parse(entry.minute ?? ""));
    }
    // Every batch is in some entry, so the entries add up to everything written.
    const written = [...expected.values()].reduce((sum, value) => sum + value, 0n);
    expect(entries.reduce((sum, { entry }) => sum + BigInt(entry.delta_total ?? "x"), 0n)).toBe(written);
    expect(written > MAX_SAFE).toBe(true);

    // The log: one "activity" info line per entry, with the same numbers.
    const logged = running.lines.filter((line) => line.msg === "activity");
    expect(logged).toEqual(
      entries.map(({ entry }) =>
        expect.objectContaining({
          level: "info",
          minute: entry.minute,
          uniqueKeys: Number(entry.unique_keys),
          deltaTotal: entry.delta_total,
          batches: Number(entry.batches),
          partial: entry.partial === "true",
        }),
      ),
    );

    // The webhook: one JSON document per entry, in order, and each delivery logged with its status.
    await waitFor(async () => hook.bodies.length === entries.length, { message: "webhook deliveries" });
    expect(hook.bodies).toEqual(
      entries.map(({ entry }) => ({
        minute: entry.minute,
        uniqueKeys: Number(entry.unique_keys),
        deltaTotal: entry.delta_total,
        batches: Number(entry.batches),
        partial: entry.partial === "true",
        emittedAt: entry.emitted_at,
        syncer: entry.syncer,
      })),
    );
    const delivered = running.lines.filter((line) => line.msg === "activity webhook delivered");
    expect(delivered.map((line) => [line.minute, line.status])).toEqual(
      entries.map(({ entry }) => [entry.minute, 204]),
    );
  });

  it("reports quiet periods as zeros while it holds shards", async () => {
    const prefix = env.newPrefix();
    const running = fixtures.run({ prefix, intervalMs: 100, periodMs: 400 });

    await waitFor(async () => (await env.redis.xlen(running.streamKey)) >= 5);
    await running.stop();

    const entries = await readStream(env.redis, running.streamKey);
    expect(entries.slice(1, -1).map(({ entry }) => entry)).toContainEqual(
      expect.objectContaining({ unique_keys: "0", delta_total: "0", batches: "0", partial: "false" }),
    );
  });

  it("caps the stream: exactly with MAXLEN =", async () => {
    const prefix = env.newPrefix();
    const running = fixtures.run({ prefix, intervalMs: 50, periodMs: 200, stream: { maxLen: 3, trim: "=" } });

    await waitFor(async () => running.lines.filter((line) => line.msg === "activity").length >= 6, {
      message: "six periods",
    });
    await running.stop();

    const logged = running.lines.filter((line) => line.msg === "activity").map((line) => line.minute);
    const entries = await readStream(env.redis, running.streamKey);
    expect(entries.map(({ entry }) => entry.minute)).toEqual(logged.slice(-3));
  });

  it("caps the stream approximately with MAXLEN ~ (whole nodes are trimmed)", async () => {
    const prefix = env.newPrefix();
    const key = activityStreamKey(prefix);
    // The accounting driven directly, 400 periods in a moment; the writes are the production XADD.
    const start = Date.parse("2026-11-21T12:00:00.000Z");
    let clock = start;
    const { logger } = captureLogger("warn");
    const activity = new Activity({
      logger,
      redis: env.redis,
      shards: 1,
      intervalMs: 5_000,
      stream: { key, maxLen: 50 },
      now: () => clock,
    });
    // Idle cycles every 5 s for 400 minutes: the cycle at 18:40:00 confirms (and reports) 18:39.
    for (let i = 0; i <= 400 * 12; i++, clock += 5_000) {
      activity.observeCycle({
        startedAt: new Date(clock),
        durationMs: 1,
        outcomes: [{ kind: "idle", shard: 0, observedAt: new Date(clock) }],
      });
    }
    await activity.streamWritten();

    const [, nodeMax] = (await env.redis.config("GET", "stream-node-max-entries")) as [string, string];
    const length = await env.redis.xlen(key);
    expect(length).toBeGreaterThanOrEqual(50);
    expect(length).toBeLessThanOrEqual(50 + Number(nodeMax));
    // The newest entries are the ones kept.
    const last = (await readStream(env.redis, key)).at(-1);
    expect(last?.entry.minute).toBe(new Date(start + 399 * 60_000).toISOString());
  });

  it("a cycle listener that throws is logged and does not disturb the sync", async () => {
    const prefix = env.newPrefix();
    const { logger, lines } = captureLogger();
    const syncer = new Syncer({
      redis: env.redis,
      concurrency: 2,
      pool: env.pool,
      logger,
      keyspace: new Keyspace(prefix, 1),
      intervalMs: 100,
      scanCount: 1_000,
      leaseTtlMs: 1_000,
    });
    syncer.on("cycle", () => {
      throw new Error("listener bug");
    });
    const seen: number[] = [];
    const countOutcomes = (report: CycleReport) => seen.push(report.outcomes.length);
    syncer.on("cycle", countOutcomes);
    await addDeltas(env.redis, prefix, [["a", 1]]);

    const report = await syncer.runCycle();
    syncer.off("cycle", countOutcomes);
    await syncer.runCycle();

    expect(report.failures).toEqual([]);
    expect(await readCounters(env.pool)).toEqual(new Map([["a", 1n]]));
    expect(seen).toEqual([1]);
    expect(lines.filter((line) => line.msg === "syncer listener failed")).toHaveLength(2);
  });
});
