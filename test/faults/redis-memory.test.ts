import { afterEach, describe, expect, it } from "vitest";
import { exactlyOnceViolations } from "../../tools/load/accounted.ts";
import { type PostgresServer, startMigratedPostgres } from "../../tools/servers/postgres.ts";
import { type RedisServer, startRedis } from "../../tools/servers/redis.ts";
import { spawnTally } from "../../tools/tally-process.ts";
import { waitFor } from "../harness/fixtures.ts";
import { Deployment } from "../support/deployment.ts";
import { parseMetrics, sampleValue } from "../support/metrics.ts";

// Redis running out of room, in real processes against a private Redis: a policy that evicts accepted
// increments, a policy changed under a running service, and a Redis that fills up while Postgres is down.

const EX_CONFIG = 78;
const CHECK_INTERVAL = { REDIS_CHECK_INTERVAL_MS: "200" };

let deployment: Deployment | undefined;
let redis: RedisServer | undefined;
let postgres: PostgresServer | undefined;
afterEach(async () => {
  await deployment?.close();
  deployment = undefined;
  await redis?.destroy();
  redis = undefined;
  await postgres?.destroy();
  postgres = undefined;
});

async function readyz(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(url);
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

const syncerReadyz = (metricsUrl: string) => readyz(metricsUrl.replace(/\/metrics$/, "/readyz"));

describe("Redis maxmemory-policy", () => {
  it("one that evicts any key stops start:api and start:syncer with one line and exit code 78", async () => {
    const server = await startRedis({ appendOnly: false, args: ["--maxmemory-policy", "allkeys-lru"] });
    redis = server;
    const d = await Deployment.create({ redisUrl: server.url });
    deployment = d;

    for (const entry of ["api/main.ts", "syncer/main.ts"]) {
      const process = spawnTally(entry, { ...d.env, API_WORKERS: "2" });
      const { code } = await process.exited;
      expect(code, `${entry} exit code`).toBe(EX_CONFIG);
      const fatal = process.logs.filter((line) => line.level === "fatal");
      expect(fatal, entry).toHaveLength(1);
      expect(fatal[0]?.msg).toContain("allkeys-lru");
      expect(fatal[0]?.msg).toContain("REDIS_ALLOW_EVICTION");
      expect(
        process.logs.filter((line) => /^\s+at /.test(String(line.msg))),
        "stack lines",
      ).toEqual([]);
    }

    // The documented override: the service runs, and says what it risks.
    const api = await d.startApi({ REDIS_ALLOW_EVICTION: "true" });
    expect((await readyz(`${api.url}/readyz`)).status).toBe(200);
    await api.waitForLog((line) => String(line.msg).startsWith("REDIS_ALLOW_EVICTION=true"));
  });

  it("changed at run time turns /readyz to 503 on the API and the syncer, logs an error and shows in a metric", {
    timeout: 60_000,
  }, async () => {
    const server = await startRedis({ appendOnly: false });
    redis = server;
    const d = await Deployment.create({ redisUrl: server.url, env: CHECK_INTERVAL });
    deployment = d;
    const api = await d.startApi();
    const syncer = await d.startSyncer();
    await waitFor(async () => (await syncerReadyz(syncer.metricsUrl)).status === 200, {
      message: "the syncer never became ready",
    });

    await d.redis.config("SET", "maxmemory-policy", "allkeys-lfu");
    await waitFor(async () => (await readyz(`${api.url}/readyz`)).status === 503, {
      message: "the API stayed ready under an evicting policy",
    });
    expect((await readyz(`${api.url}/readyz`)).body).toMatchObject({ code: "redis_eviction_policy" });
    await waitFor(async () => (await syncerReadyz(syncer.metricsUrl)).status === 503, {
      message: "the syncer stayed ready under an evicting policy",
    });
    expect((await syncerReadyz(syncer.metricsUrl)).body).toMatchObject({ redis: "redis_eviction_policy" });
    for (const process of [api, syncer]) {
      const logged = await process.waitForLog((line) => line.level === "error");
      expect(logged.msg).toContain("allkeys-lfu");
      const metrics = parseMetrics(await (await fetch(process.metricsUrl)).text());
      expect(
        sampleValue(metrics, "tally_redis_eviction_risk", {
          node: `127.0.0.1:${server.port}`,
          policy: "allkeys-lfu",
        }),
      ).toBe(2);
    }

    // volatile-* keeps the counts (the hashes have no TTL): ready again, with a warning about retries.
    await d.redis.config("SET", "maxmemory-policy", "volatile-lru");
    await waitFor(async () => (await readyz(`${api.url}/readyz`)).status === 200, {
      message: "the API did not become ready under volatile-lru",
    });
    await api.waitForLog(
      (line) => line.level === "warn" && String(line.msg).includes("Idempotency-Key records"),
    );
    await waitFor(async () => (await syncerReadyz(syncer.metricsUrl)).status === 200, {
      message: "the syncer did not become ready under volatile-lru",
    });
    for (const process of [api, syncer]) {
      expect(process.child.exitCode).toBeNull();
    }
  });
});

describe("Redis full", () => {
  it("while Postgres is down under load: 503 redis_full and not ready, a new syncer still takes the shards, recovery within a cycle of Postgres' return, exactly once", {
    timeout: 150_000,
  }, async () => {
    const server = await startRedis({ appendOnly: false });
    redis = server;
    postgres = await startMigratedPostgres();
    const d = await Deployment.create({
      redisUrl: server.url,
      databaseUrl: postgres.url(),
      env: CHECK_INTERVAL,
    });
    deployment = d;
    const api = await d.startApi();
    let syncer = await d.startSyncer();
    const load = await d.startLoad([api], { concurrency: 6 });
    await load.waitForAccepted(200);

    // Room for a few thousand pending keys past what Redis holds now.
    await postgres.stop();
    const used = Number(/used_memory:(\d+)/.exec(await d.redis.info("memory"))?.[1]);
    await d.redis.config("SET", "maxmemory", String(used + 700_000));

    await waitFor(async () => load.sent.some((request) => request.status === 503), {
      timeoutMs: 60_000,
      message: "Redis never filled up",
    });
    const fullAt = load.sent.findIndex((request) => request.status === 503);
    // Redis hovers at its limit (a write now and then fits): probe until one is refused, and read why.
    const probes: { key: string; status: number }[] = [];
    const probe = async () => {
      const key = `probe-${probes.length}`;
      const response = await fetch(`${api.url}/increment`, {
        method: "POST",
        headers: { authorization: `Bearer ${await d.token()}`, "content-type": "application/json" },
        body: JSON.stringify({ key, value: 1 }),
      });
      probes.push({ key, status: response.status });
      return response;
    };
    let refusal = await probe();
    while (refusal.status !== 503 && probes.length < 100) refusal = await probe();
    expect(refusal.status).toBe(503);
    expect(refusal.headers.get("retry-after")).toBe("5");
    expect(await refusal.json()).toMatchObject({ code: "redis_full" });
    let notReady = await readyz(`${api.url}/readyz`);
    await waitFor(
      async () => {
        notReady = await readyz(`${api.url}/readyz`);
        return notReady.status === 503;
      },
      { message: "the API stayed ready with Redis full" },
    );
    expect(notReady.body).toMatchObject({ code: "redis_full" });
    const oom = sampleValue(
      parseMetrics(await (await fetch(api.metricsUrl)).text()),
      "tally_redis_errors_total",
      {
        kind: "oom",
      },
    );
    expect(oom).toBeGreaterThan(0);

    // A syncer that starts now must still take the shards' leases: only a sync can free Redis.
    await syncer.stop("SIGKILL");
    syncer = await d.startSyncer();
    await syncer.waitForLog((line) => line.msg === "took shards", 10_000);

    await postgres.start();
    const backAt = performance.now();
    await waitFor(
      async () => load.sent.some((request) => request.startedAt > backAt && request.status === 202),
      {
        timeoutMs: 20_000,
        message: "the API never accepted again after Postgres came back",
      },
    );
    const recoveredAt = Math.min(
      ...load.sent
        .filter((request) => request.startedAt > backAt && request.status === 202)
        .map((r) => r.endedAt),
    );
    // One cycle is 500 ms here; the bound leaves room for the syncer's Postgres reconnect and a loaded CI.
    expect(recoveredAt - backAt, "ms from Postgres' return to the first 202").toBeLessThan(10_000);
    await waitFor(async () => (await readyz(`${api.url}/readyz`)).status === 200, {
      message: "the API did not become ready again",
    });
    await load.waitForAccepted(200);
    await load.stop();
    await d.waitForDrain(30_000);

    expect(fullAt).toBeGreaterThan(0);
    const counters = await d.counters();
    for (const { key, status } of probes) {
      expect(counters.get(key) ?? 0n, key).toBe(status === 202 ? 1n : 0n);
      counters.delete(key);
    }
    expect(exactlyOnceViolations(load.sent, counters)).toEqual([]);
    expect(await d.stalenessSeconds()).toBeLessThan(10);
  });
});
