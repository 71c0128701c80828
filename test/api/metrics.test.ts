import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { shardKeys } from "../../lib/redis/keyspace.ts";
import { type RedisServer, startRedis } from "../../tools/servers/redis.ts";
import { createTestApi, type TestApi } from "../support/api.ts";
import { family, parseMetrics, type Sample, sampleValue } from "../support/metrics.ts";

// The API's Prometheus metrics, read from the node's registry after requests through app.request().

async function scrape(api: TestApi): Promise<Sample[]> {
  return parseMetrics(await api.node.metrics.registry.metrics());
}

/** A family's samples, in a stable order, so a whole family can be compared with toEqual. */
function sorted(samples: Sample[], name: string) {
  return family(samples, name).sort((a, b) =>
    JSON.stringify(a.labels).localeCompare(JSON.stringify(b.labels)),
  );
}

describe("API metrics", () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await createTestApi({ RATE_LIMIT_POINTS: "4", RATE_LIMIT_DURATION_S: "60" });
  });
  afterAll(() => api.close());

  it("counts every answer by route pattern, method and status, and 4xx answers by problem code", async () => {
    const limited = await api.token();
    const other = await api.token();
    const statuses = [
      (await api.increment({ key: "page:home", value: 5 }, limited)).status,
      (await api.increment({ key: "page:home", value: -2 }, limited)).status,
      (await api.increment({ key: "", value: 1 }, limited)).status,
      (
        await api.node.app.request("/counters/page%3Ahome", {
          headers: { authorization: `Bearer ${limited}` },
        })
      ).status,
      // The fifth request of a client allowed four.
      (await api.increment({ key: "page:home", value: 1 }, limited)).status,
      (await api.node.app.request("/increment", { method: "POST", body: "{}" })).status,
      (
        await api.node.app.request("/counters/never-counted", {
          headers: { authorization: `Bearer ${other}` },
        })
      ).status,
      (await api.node.app.request("/no/such/path")).status,
      (await api.node.app.request("/increment")).status,
      (await api.node.app.request("/increment", { method: "PROPFIND" })).status,
      (await api.node.app.request("/healthz")).status,
    ];
    expect(statuses).toEqual([202, 202, 400, 200, 429, 401, 404, 404, 405, 405, 200]);

    const samples = await scrape(api);
    expect(sorted(samples, "tally_http_requests_total")).toEqual(
      [
        { labels: { route: "/increment", method: "POST", status: "202" }, value: 2 },
        { labels: { route: "/increment", method: "POST", status: "400" }, value: 1 },
        { labels: { route: "/counters/*", method: "GET", status: "200" }, value: 1 },
        { labels: { route: "/increment", method: "POST", status: "429" }, value: 1 },
        { labels: { route: "/increment", method: "POST", status: "401" }, value: 1 },
        { labels: { route: "/counters/*", method: "GET", status: "404" }, value: 1 },
        { labels: { route: "unmatched", method: "GET", status: "404" }, value: 1 },
        { labels: { route: "/increment", method: "GET", status: "405" }, value: 1 },
        // Any method outside the standard ones is one series, not one per spelling.
        { labels: { route: "/increment", method: "other", status: "405" }, value: 1 },
        { labels: { route: "/healthz", method: "GET", status: "200" }, value: 1 },
      ].sort((a, b) => JSON.stringify(a.labels).localeCompare(JSON.stringify(b.labels))),
    );
    // Route patterns only: no key or raw path ever becomes a label value.
    for (const sample of samples) {
      for (const value of Object.values(sample.labels)) {
        expect(value).not.toMatch(/page:home|never-counted|no\/such/);
      }
    }

    expect(sorted(samples, "tally_rejected_requests_total")).toEqual([
      { labels: { code: "counter_not_found" }, value: 1 },
      { labels: { code: "invalid_body" }, value: 1 },
      { labels: { code: "method_not_allowed" }, value: 2 },
      { labels: { code: "not_found" }, value: 1 },
      { labels: { code: "rate_limited" }, value: 1 },
      { labels: { code: "unauthorized" }, value: 1 },
    ]);
    expect(sampleValue(samples, "tally_rate_limited_total")).toBe(1);
    expect(sampleValue(samples, "tally_increments_accepted_total")).toBe(2);
    expect(sorted(samples, "tally_redis_errors_total")).toEqual([
      { labels: { kind: "disconnected" }, value: 0 },
      { labels: { kind: "noreplicas" }, value: 0 },
      { labels: { kind: "oom" }, value: 0 },
      { labels: { kind: "overflow" }, value: 0 },
      { labels: { kind: "timeout" }, value: 0 },
      { labels: { kind: "unavailable" }, value: 0 },
      { labels: { kind: "unconfirmed" }, value: 0 },
    ]);
  });

  it("times requests in a histogram by route pattern and method, in seconds", async () => {
    const samples = await scrape(api);
    const labels = { route: "/increment", method: "POST" };
    const count = sampleValue(samples, "tally_http_request_duration_seconds_count", labels);
    expect(count).toBe(5);
    expect(
      sampleValue(samples, "tally_http_request_duration_seconds_bucket", { ...labels, le: "+Inf" }),
    ).toBe(count);
    const buckets = samples.filter(
      (sample) =>
        sample.name === "tally_http_request_duration_seconds_bucket" &&
        sample.labels.route === labels.route &&
        sample.labels.method === labels.method,
    );
    expect(buckets.map((bucket) => bucket.labels.le)).toEqual([
      "0.0005",
      "0.001",
      "0.0025",
      "0.005",
      "0.01",
      "0.025",
      "0.05",
      "0.1",
      "0.25",
      "0.5",
      "1",
      "2.5",
      "5",
      "+Inf",
    ]);
    const cumulative = buckets.map((bucket) => bucket.value);
    expect(cumulative).toEqual([...cumulative].sort((a, b) => a - b));
    const sum = sampleValue(samples, "tally_http_request_duration_seconds_sum", labels) ?? 0;
    // Seconds, not milliseconds: five in-process requests take well under a second together.
    expect(sum).toBeGreaterThan(0);
    expect(sum).toBeLessThan(5);
    // Each series of the histogram carries exactly route and method (and le on buckets), never status.
    const series = samples.filter((sample) => sample.name.startsWith("tally_http_request_duration_seconds"));
    for (const sample of series) {
      const expected = sample.name.endsWith("_bucket") ? ["le", "method", "route"] : ["method", "route"];
      expect(Object.keys(sample.labels).sort()).toEqual(expected);
    }
  });

  it("counts an increment Redis refuses as overflowing as an overflow Redis error and a 422", async () => {
    await api.node.redis.hset(shardKeys(api.prefix, 0).dirty, "edge", (2n ** 63n - 10n).toString());
    expect((await api.increment({ key: "edge", value: 11 }, await api.token())).status).toBe(422);
    const samples = await scrape(api);
    expect(sampleValue(samples, "tally_redis_errors_total", { kind: "overflow" })).toBe(1);
    expect(sampleValue(samples, "tally_rejected_requests_total", { code: "counter_out_of_range" })).toBe(1);
    expect(sampleValue(samples, "tally_increments_accepted_total")).toBe(2);
  });
});

describe("API metrics when Redis fails", () => {
  let redisServer: RedisServer;
  let api: TestApi;
  beforeAll(async () => {
    redisServer = await startRedis({ args: ["--enable-debug-command", "yes"] });
    api = await createTestApi({ REDIS_URL: redisServer.url, REDIS_COMMAND_TIMEOUT_MS: "200" });
  });
  afterAll(async () => {
    await api.close();
    await redisServer.destroy();
  });

  it("counts a Redis that does not answer in time as a timeout, and one that is down as unavailable", async () => {
    const token = await api.token();
    const blocker = new Redis(redisServer.url);
    try {
      const blocked = blocker.call("DEBUG", "SLEEP", "1");
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect((await api.increment({ key: "slow", value: 1 }, token)).status).toBe(503);
      await blocked;
    } finally {
      blocker.disconnect();
    }
    await redisServer.kill();
    expect((await api.increment({ key: "down", value: 1 }, token)).status).toBe(503);

    const samples = await scrape(api);
    expect(sorted(samples, "tally_redis_errors_total")).toEqual([
      { labels: { kind: "disconnected" }, value: 0 },
      { labels: { kind: "noreplicas" }, value: 0 },
      { labels: { kind: "oom" }, value: 0 },
      { labels: { kind: "overflow" }, value: 0 },
      { labels: { kind: "timeout" }, value: 1 },
      { labels: { kind: "unavailable" }, value: 1 },
      { labels: { kind: "unconfirmed" }, value: 0 },
    ]);
    expect(
      sampleValue(samples, "tally_http_requests_total", {
        route: "/increment",
        method: "POST",
        status: "503",
      }),
    ).toBe(2);
    // A 503 is the service's failure, not the client's: no rejected request is counted.
    expect(family(samples, "tally_rejected_requests_total")).toEqual([]);
    expect(sampleValue(samples, "tally_increments_accepted_total")).toBe(0);
  });
});

describe("HTTP_METRICS_DISABLED=true", () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await createTestApi({
      HTTP_METRICS_DISABLED: "true",
      RATE_LIMIT_POINTS: "3",
      RATE_LIMIT_DURATION_S: "60",
    });
  });
  afterAll(() => api.close());

  it("drops the per-request count and duration and keeps the rest, refusals and Redis errors included", async () => {
    const token = await api.token();
    expect((await api.increment({ key: "quiet", value: 3 }, token)).status).toBe(202);
    expect((await api.increment({ key: "", value: 1 }, token)).status).toBe(400);
    expect((await api.increment({ key: "quiet", value: 1 }, token)).status).toBe(202);
    expect((await api.increment({ key: "quiet", value: 1 }, token)).status).toBe(429);
    const samples = await scrape(api);
    expect(family(samples, "tally_http_requests_total")).toEqual([]);
    expect(family(samples, "tally_http_request_duration_seconds_count")).toEqual([]);
    expect(sampleValue(samples, "tally_increments_accepted_total")).toBe(2);
    expect(sampleValue(samples, "tally_rejected_requests_total", { code: "invalid_body" })).toBe(1);
    expect(sampleValue(samples, "tally_rejected_requests_total", { code: "rate_limited" })).toBe(1);
    expect(sampleValue(samples, "tally_rate_limited_total")).toBe(1);
  });
});
