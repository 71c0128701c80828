import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../harness/fixtures.ts";
import { ActivityFixtures, type ActivitySyncer } from "../support/activity.ts";
import { addDeltas, readCounters, useSyncerEnv } from "../support/syncer.ts";

// A webhook receiver that fails or never answers must cost the sync nothing: cycles stay on schedule, data
// reaches Postgres as fast as ever, the failure is logged, and nothing rejects unhandled.

const env = useSyncerEnv();
const fixtures = new ActivityFixtures(env);
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);

beforeAll(() => {
  process.on("unhandledRejection", onUnhandled);
});

afterAll(() => {
  process.off("unhandledRejection", onUnhandled);
});

afterEach(async () => {
  await fixtures.cleanup();
  // Let a delivery cut off by the receiver's close settle, so a rejection would land in this test.
  await sleep(50);
  expect(unhandled).toEqual([]);
});

/** Writes one increment and returns how long Postgres took to have it. */
async function timeToPostgres(prefix: string, key: string): Promise<number> {
  const began = performance.now();
  await addDeltas(env.redis, prefix, [[key, 1]]);
  await waitFor(async () => (await readCounters(env.pool)).get(key) === 1n, {
    timeoutMs: 10_000,
    intervalMs: 10,
    message: `${key} never reached Postgres`,
  });
  return performance.now() - began;
}

/** Largest distance between the starts of two consecutive cycles. */
function largestCycleGap(running: ActivitySyncer): number {
  const starts = running.cycles.map((report) => report.startedAt.getTime());
  return Math.max(0, ...starts.slice(1).map((start, i) => start - (starts[i] ?? start)));
}

describe("activity webhook trouble", () => {
  it("a receiver answering 500: the status is logged, the sync goes on", async () => {
    const prefix = env.newPrefix();
    const hook = await fixtures.receiver((response) => response.writeHead(500).end("boom"));
    const running = fixtures.run({
      prefix,
      intervalMs: 100,
      periodMs: 300,
      webhook: { url: hook.url, timeoutMs: 5_000 },
    });

    await waitFor(async () => hook.requests >= 3, { message: "three deliveries" });
    const latency = await timeToPostgres(prefix, "after-500s");

    expect(running.lines).toContainEqual(
      expect.objectContaining({ level: "warn", msg: "activity webhook failed", status: 500 }),
    );
    expect(running.lines.filter((line) => line.msg === "activity webhook delivered")).toEqual([]);
    expect(latency).toBeLessThan(1_000);
    expect(running.cycles.every((report) => report.failures.length === 0)).toBe(true);
  });

  it("a receiver that never answers: cycles keep their schedule, data keeps flowing, the timeout is logged", async () => {
    const prefix = env.newPrefix();
    // Accepts the request and never answers.
    const hook = await fixtures.receiver(() => {});
    const intervalMs = 250;
    const began = performance.now();
    const running = fixtures.run({
      prefix,
      intervalMs,
      periodMs: 500,
      // The production default timeout; a queue of two so that dropping shows within the test.
      webhook: { url: hook.url, timeoutMs: 5_000, maxQueued: 2 },
    });

    // While the first delivery hangs (5 s), keep writing and time each write's way to Postgres.
    const latencies: number[] = [];
    for (let i = 0; i < 8; i++) {
      latencies.push(await timeToPostgres(prefix, `during-hang-${i}`));
      await sleep(300);
    }
    expect(running.lines.filter((line) => line.msg === "activity").length).toBeGreaterThanOrEqual(4);

    await waitFor(async () => running.lines.some((line) => line.msg === "activity webhook timed out"), {
      timeoutMs: 10_000,
      message: "the timeout was never logged",
    });
    const timedOut = running.lines.find((line) => line.msg === "activity webhook timed out");
    expect(timedOut).toMatchObject({ level: "warn", timedOut: true, timeoutMs: 5_000 });
    expect(Number(timedOut?.durationMs)).toBeGreaterThanOrEqual(4_900);
    expect(running.lines).toContainEqual(
      expect.objectContaining({
        level: "warn",
        msg: "activity webhook busy: dropped the oldest waiting report",
      }),
    );
    // The next delivery goes out after the timeout, not before: one request in flight at most (the other
    // reports waited or were dropped; none piled up on the receiver), and the sender is not stuck either.
    await waitFor(async () => hook.requests >= 2, { message: "no delivery after the timeout" });
    const [first = 0, second = 0] = hook.arrivals;
    expect(second - first).toBeGreaterThanOrEqual(4_900);

    // The sync never waited for the webhook: every write reached Postgres within about one cycle (far below
    // the 5 s the receiver held its request), no cycle took more than an interval, and cycles kept their
    // fixed rate all along.
    expect(Math.max(...latencies)).toBeLessThan(1_000);
    const durations = running.cycles.map((report) => report.durationMs);
    expect(Math.max(...durations)).toBeLessThan(intervalMs);
    expect(largestCycleGap(running)).toBeLessThan(intervalMs * 3);
    const elapsed = performance.now() - began;
    expect(running.cycles.length).toBeGreaterThanOrEqual(Math.floor((elapsed / intervalMs) * 0.7));
  });
});
