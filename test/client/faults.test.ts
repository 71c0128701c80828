import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it, onTestFinished } from "vitest";
import { TallyClient, type TallyError } from "../../client/src/index.ts";
import { startRedis } from "../../tools/servers/redis.ts";
import { waitFor } from "../harness/fixtures.ts";
import { Deployment } from "../support/deployment.ts";
import { startNginx } from "../support/nginx.ts";

// The client's promise end to end: a call that resolved is counted exactly once in Postgres, whatever
// happens to the API nodes and Redis while it is sent.

/** Callers that increment without pause until stopped; what each key was sent, by outcome. */
function keepCalling(client: TallyClient, callers: number) {
  const resolved = new Map<string, bigint>();
  const failed: unknown[] = [];
  let stopped = false;
  const running = Array.from({ length: callers }, async (_, caller) => {
    for (let i = 0; !stopped; i++) {
      const key = `c${caller}:${i % 50}`;
      // Many calls in flight per caller, as a busy server's handlers would make them.
      await Promise.all(
        Array.from({ length: 20 }, () =>
          client.increment(key, 1).then(
            () => resolved.set(key, (resolved.get(key) ?? 0n) + 1n),
            (error: unknown) => failed.push(error),
          ),
        ),
      );
    }
  });
  return {
    resolved,
    failed,
    get total() {
      return [...resolved.values()].reduce((sum, value) => sum + value, 0n);
    },
    async stop() {
      stopped = true;
      await Promise.all(running);
    },
  };
}

describe("TallyClient under faults", () => {
  it("behind nginx, through kill -9 of an API node and a Redis restart: every resolved call counted once", {
    timeout: 120_000,
  }, async () => {
    const redis = await startRedis({ appendOnly: true });
    onTestFinished(() => redis.destroy());
    const d = await Deployment.forTest({
      redisUrl: redis.url,
      env: { SYNC_SHARDS: "2", REDIS_COMMAND_TIMEOUT_MS: "2000" },
    });
    const [victim, survivor] = await Promise.all([d.startApi(), d.startApi()]);
    if (victim === undefined || survivor === undefined) throw new Error("two API nodes expected");
    await d.startSyncer();
    const nginx = await startNginx([victim.url, survivor.url]);
    onTestFinished(async () => {
      await nginx.stop();
    });

    const retried: TallyError[] = [];
    const client = new TallyClient({
      url: nginx.url,
      token: await d.token(),
      maxWaitMs: 5,
      retry: { maxDelayMs: 1_000 },
      onError: (error) => retried.push(error),
    });
    const load = keepCalling(client, 4);
    await waitFor(async () => load.total > 2_000n, { message: "the client never got going" });

    await victim.stop("SIGKILL");
    const afterKill = load.total;
    await waitFor(async () => load.total > afterKill + 2_000n, {
      message: "no call resolved after the node was killed",
    });

    await redis.stop();
    await sleep(500);
    await redis.start();
    const afterRestart = load.total;
    await waitFor(async () => load.total > afterRestart + 2_000n, {
      timeoutMs: 30_000,
      message: "no call resolved after Redis came back",
    });

    await load.stop();
    await client.close();
    expect(load.failed).toEqual([]);
    // The faults were felt, and retried through.
    expect(retried.length).toBeGreaterThan(0);
    expect(client.stats.retries).toBeGreaterThan(0);
    await d.waitForDrain(30_000);
    expect(await d.counters()).toEqual(load.resolved);
  });

  it("with default options, the only API node killed and restarted 10 s later: every call resolves, exactly once", {
    timeout: 90_000,
  }, async () => {
    const d = await Deployment.forTest({ env: { SYNC_SHARDS: "2" } });
    const api = await d.startApi();
    await d.startSyncer();
    const client = new TallyClient({ url: api.url, token: await d.token(), maxWaitMs: 5 });
    const load = keepCalling(client, 4);
    await waitFor(async () => load.total > 2_000n, { message: "the client never got going" });

    await api.stop("SIGKILL");
    const duringOutage = load.total;
    await sleep(10_000);
    // Nothing resolved while no node listened: the calls waited, refused connections retried as unsent.
    expect(load.total).toBe(duringOutage);
    await d.startApi({ PORT: new URL(api.url).port });
    await waitFor(async () => load.total > duringOutage + 2_000n, {
      timeoutMs: 30_000,
      message: "no call resolved after the node came back",
    });

    await load.stop();
    await client.close();
    expect(load.failed).toEqual([]);
    expect(client.stats.retries).toBeGreaterThan(0);
    await d.waitForDrain(30_000);
    expect(await d.counters()).toEqual(load.resolved);
  });

  it("a stalled service fills the buffer to maxBuffered, then increment() waits; all of it lands once it answers", {
    timeout: 60_000,
  }, async () => {
    const d = await Deployment.forTest();
    const api = await d.startApi();
    await d.startSyncer();
    const client = new TallyClient({
      url: api.url,
      token: await d.token(),
      maxBatchSize: 10,
      maxInFlight: 2,
      maxBuffered: 100,
      requestTimeoutMs: 30_000,
    });
    await client.increment("warm", 1);

    api.child.kill("SIGSTOP");
    let resolved = 0;
    let peakBuffered = 0;
    const calls = Array.from({ length: 250 }, (_, i) =>
      client.increment(`stalled:${i % 40}`, 1).then(() => {
        resolved += 1;
      }),
    );
    for (let i = 0; i < 10; i++) {
      peakBuffered = Math.max(peakBuffered, client.stats.buffered);
      await sleep(100);
    }
    // Full, and the other 150 calls wait outside the buffer instead of growing it.
    expect(client.stats.buffered).toBe(100);
    expect(resolved).toBe(0);

    api.child.kill("SIGCONT");
    await Promise.all(calls);
    await client.close();
    expect(peakBuffered).toBe(100);
    expect(resolved).toBe(250);
    await d.waitForDrain();
    const counters = await d.counters();
    const stalled = [...counters].filter(([key]) => key.startsWith("stalled:"));
    expect(stalled.reduce((sum, [, value]) => sum + value, 0n)).toBe(250n);
    expect(counters.get("warm")).toBe(1n);
  });
});
