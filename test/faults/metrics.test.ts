import { afterEach, describe, expect, it } from "vitest";
import { type PostgresServer, startMigratedPostgres } from "../../tools/servers/postgres.ts";
import { waitFor } from "../harness/fixtures.ts";
import { Deployment } from "../support/deployment.ts";
import { parseMetrics, type Sample, sampleValue } from "../support/metrics.ts";

// The metrics ports of real start:api and start:syncer processes: scraped over HTTP, and the syncer's
// /readyz going 503 while Postgres is down long enough for staleness to pass the SPEC's 10 s, then back.

let deployment: Deployment | undefined;
let postgres: PostgresServer | undefined;
afterEach(async () => {
  await deployment?.close();
  deployment = undefined;
  await postgres?.destroy();
  postgres = undefined;
});

async function scrape(url: string): Promise<Sample[]> {
  const response = await fetch(url);
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  return parseMetrics(await response.text());
}

describe("metrics ports", () => {
  it("serve each process's metrics; the syncer's /readyz fails while Postgres is too far behind", {
    timeout: 90_000,
  }, async () => {
    // A private server: the shared one must never be stopped under the other test files.
    const server = await startMigratedPostgres();
    postgres = server;
    const d = await Deployment.create({ databaseUrl: server.url(), env: { SYNC_INTERVAL_MS: "300" } });
    deployment = d;
    const api = await d.startApi();
    const syncer = await d.startSyncer();
    const readyz = new URL("/readyz", syncer.metricsUrl);

    const token = await d.token();
    for (let i = 0; i < 3; i++) {
      const response = await fetch(`${api.url}/increment`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}` },
        body: JSON.stringify({ key: `scraped-${i}`, value: 1 }),
      });
      expect(response.status).toBe(202);
    }
    await d.waitForDrain();

    const apiSamples = await scrape(api.metricsUrl);
    const accepted = { route: "/increment", method: "POST", status: "202" };
    expect(sampleValue(apiSamples, "tally_http_requests_total", accepted)).toBe(3);
    // Node's process metrics, under the same prefix.
    expect(apiSamples.some((sample) => sample.name === "tally_process_cpu_user_seconds_total")).toBe(true);
    // Nothing but /metrics on the API's metrics port.
    expect((await fetch(new URL("/healthz", api.metricsUrl))).status).toBe(404);

    const syncerSamples = await scrape(syncer.metricsUrl);
    expect(sampleValue(syncerSamples, "tally_syncer_shards")).toBe(1);
    expect(sampleValue(syncerSamples, "tally_syncer_batches_total", { outcome: "applied" })).toBeGreaterThan(
      0,
    );
    expect(sampleValue(syncerSamples, "tally_syncer_staleness_seconds")).toBeLessThan(10);
    expect((await fetch(new URL("/healthz", syncer.metricsUrl))).status).toBe(200);
    expect((await fetch(readyz)).status).toBe(200);

    await server.stop();
    const stoppedAt = performance.now();
    // Staleness counts from the last swap Postgres committed; past 10 s the syncer reports not ready.
    const notReady = await waitFor(
      async () => {
        const response = await fetch(readyz);
        return response.status === 503 && ((await response.json()) as Record<string, unknown>);
      },
      { timeoutMs: 20_000, intervalMs: 250, message: "the syncer's /readyz never failed" },
    );
    expect(performance.now() - stoppedAt).toBeGreaterThan(9_000);
    expect(notReady).toMatchObject({ status: "not ready", shards: [0] });
    expect(notReady.stalenessSeconds).toBeGreaterThan(10);
    const behind = await scrape(syncer.metricsUrl);
    expect(sampleValue(behind, "tally_syncer_staleness_seconds")).toBeGreaterThan(10);
    expect(sampleValue(behind, "tally_syncer_cycles_total", { result: "failed" })).toBeGreaterThan(0);
    // Liveness is not readiness: the process is fine, Postgres is not.
    expect((await fetch(new URL("/healthz", syncer.metricsUrl))).status).toBe(200);

    await server.start();
    await waitFor(async () => (await fetch(readyz)).status === 200, {
      timeoutMs: 20_000,
      message: "the syncer's /readyz did not recover after Postgres came back",
    });
    expect(sampleValue(await scrape(syncer.metricsUrl), "tally_syncer_staleness_seconds")).toBeLessThan(10);

    // Both processes still stop cleanly with their metrics servers open (and a scraper's keep-alive).
    expect(await api.stop("SIGTERM")).toBe(0);
    expect(await syncer.stop("SIGTERM")).toBe(0);
  });
});
