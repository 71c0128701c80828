import { execFile } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type pg from "pg";
import { TallyClient } from "../client/src/index.ts";
import { parseConfig } from "../lib/config.ts";
import { connectRedis, createRedis, type RedisClient } from "../lib/redis/client.ts";
import { RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES } from "../lib/redis/hash-encoding.ts";
import { type Keyspace, keyspaceOf } from "../lib/redis/keyspace.ts";
import { mintToken } from "../lib/tokens.ts";
import { generateLoad, type LoadResult } from "../tools/load/throughput.ts";
import { freePort } from "../tools/servers/ports.ts";
import { redisCommand } from "../tools/servers/redis.ts";
import { spawnTally, type TallyProcess } from "../tools/tally-process.ts";
import { measureFeatureCosts } from "./features.ts";
import { measureK6Batches } from "./k6-batches.ts";
import { longestSwapToCommit, worstStalenessBeforeCommits } from "./ledger.ts";
import { rssOfTree } from "./proc.ts";
import { measureReplicas } from "./replicas.ts";
import { type BenchResults, type HttpRun, renderChart, renderReport } from "./report.ts";
import { measureCurvePoint } from "./staleness-curve.ts";
import { startBenchStores } from "./stores.ts";
import { incrementInShards, measureSyncerThroughput, type SyncerThroughput } from "./syncer-throughput.ts";

// `npm run bench`: throwaway Redis and Postgres, tally as `npm start` runs it, and in the same run two
// baselines under the same load generator, connections, duration and worker count: a minimal Hono +
// ioredis server and bare node:http (bench/baselines/). Results go to stdout and to bench/results/report.md +
// chart.svg. Loopback only; it stops by itself (three to four minutes).

const SECRET = "bench-secret-0123456789abcdef0123456789abcdef";
// Single increments at each of these connection counts, and batches of the largest size at the last too.
const HTTP_CONNECTIONS = [16, 64];
const DURATION_S = 10;
const WARMUP_S = 3;
const ROUNDS = 3;
const HTTP_KEYS = 10_000;
// Batch sizes, each measured this many times (median); a 1M batch takes ~10 s, once is enough.
const SYNC_SIZES: [keys: number, repetitions: number][] = [
  [10_000, 5],
  [100_000, 3],
  [1_000_000, 1],
];
// The syncer reads as the service does by default (SYNC_SCAN_COUNT).
const SYNC_SCAN_COUNT = 1_000;
const STALENESS_KEYS_PER_CYCLE = 100_000;
const STALENESS_WATCH_S = 20;
// Two cycles of load and injected keys before staleness counts, as the HTTP runs are warmed up: the first
// batches pay once for the syncer's code being compiled and for the first update of rows inserted just
// before. The warm-up's worst staleness is still reported, beside the figure that counts.
const STALENESS_WARMUP_S = 10;
// The keys-per-cycle → staleness curve, with the default shards: one syncer applying them one at a time and
// two at once (SYNC_CONCURRENCY), and two syncers sharing them, one at a time each.
const CURVE_KEYS_PER_CYCLE = [100_000, 250_000, 500_000, 1_000_000];
const CURVE_SETUPS = [
  { syncers: 1, concurrency: 1 },
  { syncers: 1, concurrency: 2 },
  { syncers: 2, concurrency: 1 },
];
const CURVE_SHARDS = 4;
const RESULTS_DIR = fileURLToPath(new URL("./results/", import.meta.url));

const SECTIONS = [
  "http",
  "batches",
  "client",
  "staleness",
  "syncer",
  "curve",
  "replicas",
  "features",
] as const;
const BATCH_SIZES = [1, 10, 100, 1_000];
const BATCH_CONNECTIONS = 16;
// What Redis keeps hashes of up to when nobody set it: the last batch run shows what the recommended setting
// is worth.
const REDIS_BUILT_IN_HASH_MAX_LISTPACK_ENTRIES = 512;
// k6/batch.js is offered the rate wrk reached with batches of this size: k6 builds every body in JavaScript,
// and batches of 1,000 at that rate would measure k6 alone.
const K6_BATCH_SIZE = 100;
// The service's sync cycle (SYNC_INTERVAL_MS' default): each cycle swaps in new dirty hashes.
const SYNC_CYCLE_S = 5;
const BATCH_DURATION_S = 5;
const CLIENT_CALLERS = 64;
const CLIENT_CALLS_IN_FLIGHT = 100;
const CLIENT_KEYS = 100_000;
type Section = (typeof SECTIONS)[number];

const run = promisify(execFile);
const cleanups: (() => Promise<unknown>)[] = [];
const log = (line: string) => process.stdout.write(`${line}\n`);

// `npm run bench -- http syncer` runs only those sections; no argument runs all three.
const sections = chooseSections(process.argv.slice(2));

try {
  const { redisServer, postgresServer, databaseUrl, pool } = await startBenchStores("bench", cleanups);
  const redis = createRedis({ url: redisServer.url, name: "bench", commandTimeoutMs: 60_000 });
  await connectRedis(redis);
  cleanups.push(async () => redis.disconnect());
  const token = await mintToken({ secret: SECRET, subject: "bench", scopes: ["counters:write"] });
  const results: BenchResults = { machine: { cores: availableParallelism(), node: process.version } };

  if (["http", "batches", "client", "staleness"].some((section) => sections.has(section as Section))) {
    const workers = availableParallelism();
    const servicePort = await freePort();
    // As `npm start` runs it: compiled, plain node.
    await run("npm", ["run", "-s", "build"], { cwd: fileURLToPath(new URL("../", import.meta.url)) });
    const serviceEnv = {
      REDIS_URL: redisServer.url,
      DATABASE_URL: databaseUrl,
      JWT_SECRET: SECRET,
      // Rate limiting stays on, with a limit the benchmark never reaches.
      RATE_LIMIT_POINTS: "1000000000",
      API_WORKERS: String(workers),
      HOST: "127.0.0.1",
      PORT: String(servicePort),
      LOG_LEVEL: "warn",
    };
    const service = spawnTally("dist/scripts/start.js", serviceEnv);
    // What the service runs with (default prefix and shard count): the staleness injector writes as its API
    // would.
    const config = parseConfig(serviceEnv);
    const keyspace = keyspaceOf(config);
    cleanups.push(() => service.stop("SIGKILL"));
    const serviceUrl = await waitUntilReady(service, `http://127.0.0.1:${servicePort}`);
    log(`bench: service at ${serviceUrl} (${workers} API workers)`);

    if (sections.has("http")) {
      const { http, serviceRssMb } = await measureHttp(service, serviceUrl, token, {
        workers,
        redisUrl: redisServer.url,
      });
      results.http = http;
      results.serviceRssMb = serviceRssMb;
    }
    if (sections.has("batches")) {
      results.batches = await measureBatches(service, {
        serviceUrl,
        metricsUrl: await apiMetricsUrl(service),
        token,
        redisPort: redisServer.port,
        pool,
      });
    }
    if (sections.has("client")) {
      results.client = await measureClient(serviceUrl, token);
    }
    if (sections.has("staleness")) {
      results.staleness = [];
      for (const keys of ["recurring", "new"] as const) {
        log(`bench: staleness under load with ${STALENESS_KEYS_PER_CYCLE} ${keys} keys per cycle`);
        results.staleness.push(await measureStaleness(redis, pool, serviceUrl, token, keys, keyspace));
      }
    }
    await service.stop("SIGTERM");
  }

  if (sections.has("syncer")) {
    // With nothing else running: first let Postgres clean up and write out what the earlier sections left.
    // The staleness runs leave counters with a dead row version per update, and autovacuum starting on it
    // in the middle of a timed run would slow the syncer's side only (the raw table starts clean).
    await pool.query("VACUUM counters");
    await pool.query("CHECKPOINT");
    results.syncer = [];
    for (const [keys, repetitions] of SYNC_SIZES) {
      const runs: SyncerThroughput[] = [];
      for (let i = 0; i < repetitions; i++) {
        runs.push(await measureSyncerThroughput(redis, pool, `benchsync${i}`, keys, SYNC_SCAN_COUNT));
      }
      const result = {
        keys,
        syncerMs: medianOf(runs.map((r) => r.syncerMs)),
        rawUpsertMs: medianOf(runs.map((r) => r.rawUpsertMs)),
      };
      results.syncer.push(result);
      log(
        `bench: syncer ${keys} keys: ${result.syncerMs.toFixed(0)} ms vs raw upsert ${result.rawUpsertMs.toFixed(0)} ms`,
      );
    }
  }

  if (sections.has("curve")) {
    results.curve = [];
    const openRedis = async () => {
      const client = createRedis({ url: redisServer.url, name: "bench-curve", commandTimeoutMs: 60_000 });
      await connectRedis(client);
      return client;
    };
    for (const setup of CURVE_SETUPS) {
      for (const keysPerCycle of CURVE_KEYS_PER_CYCLE) {
        const point = await measureCurvePoint(redis, openRedis, (database) => postgresServer.url(database), {
          keysPerCycle,
          ...setup,
          shards: CURVE_SHARDS,
        });
        results.curve.push(point);
        log(
          `bench: curve: ${keysPerCycle} keys per cycle, ${setup.syncers} syncer(s), SYNC_CONCURRENCY=${setup.concurrency}: staleness at most ${point.maxS.toFixed(2)} s, longest cycle ${point.longestCycleS.toFixed(2)} s`,
        );
      }
    }
  }

  if (sections.has("replicas")) {
    await run("npm", ["run", "-s", "build"], { cwd: fileURLToPath(new URL("../", import.meta.url)) });
    results.replicas = await measureReplicas({
      workers: availableParallelism(),
      token,
      env: {
        DATABASE_URL: databaseUrl,
        JWT_SECRET: SECRET,
        RATE_LIMIT_POINTS: "1000000000",
        HOST: "127.0.0.1",
        LOG_LEVEL: "warn",
      },
      log,
      cleanups,
    });
  }

  if (sections.has("features")) {
    results.features = await measureFeatureCosts({
      token,
      env: {
        REDIS_URL: redisServer.url,
        DATABASE_URL: databaseUrl,
        JWT_SECRET: SECRET,
        RATE_LIMIT_POINTS: "1000000000",
      },
      log,
      cleanups,
    });
  }

  await mkdir(RESULTS_DIR, { recursive: true });
  const report = renderReport(results);
  await writeFile(new URL("report.md", `file://${RESULTS_DIR}`), report);
  await writeFile(new URL("chart.svg", `file://${RESULTS_DIR}`), renderChart(results));
  await writeFile(new URL("results.json", `file://${RESULTS_DIR}`), JSON.stringify(results, null, 2));
  log(`\n${report}`);
  log(`bench: wrote ${RESULTS_DIR}report.md and chart.svg`);
} finally {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
}

function chooseSections(args: string[]): Set<Section> {
  const unknown = args.filter((arg) => !(SECTIONS as readonly string[]).includes(arg));
  if (unknown.length > 0) {
    process.stderr.write(
      `bench: unknown section ${unknown.join(", ")}; choose from ${SECTIONS.join(", ")}\n`,
    );
    process.exit(2);
  }
  return new Set(args.length === 0 ? SECTIONS : (args as Section[]));
}

/** tally_increments_accepted_total, summed over the API's workers (its metrics server aggregates them). */
async function acceptedIncrements(metricsUrl: string): Promise<number> {
  const text = await (await fetch(metricsUrl)).text();
  return Number(/^tally_increments_accepted_total (\d+)/m.exec(text)?.[1] ?? Number.NaN);
}

/**
 * Increments per second through POST /increments at each batch size (BATCH_CONNECTIONS), the largest also at
 * the widest HTTP_CONNECTIONS and once more with Redis' built-in hash encoding, beside what Redis itself
 * applies with `redis-benchmark -P 1000` HINCRBY: the ceiling batches approach. During the batches of the largest size,
 * staleness (exact, from the ledger) and the processes' peak RSS; after them, once the syncer has caught
 * up, Postgres must hold exactly what the API says it accepted.
 */
async function measureBatches(
  service: TallyProcess,
  { serviceUrl, metricsUrl, token, redisPort, pool }: BatchTarget,
) {
  const { stdout } = await run("redis-benchmark", [
    "-p",
    String(redisPort),
    "-n",
    "2000000",
    "-P",
    "1000",
    "-q",
    "HINCRBY",
    "bench:redis-benchmark",
    "field",
    "1",
  ]);
  const redisHincrbyPerSecond = Number(/([\d.]+) requests per second/.exec(stdout)?.[1] ?? Number.NaN);
  log(`bench: redis-benchmark -P 1000 HINCRBY: ${redisHincrbyPerSecond.toFixed(0)}/s`);
  const acceptedBefore = await acceptedIncrements(metricsUrl);
  const largestSize = BATCH_SIZES.at(-1) ?? 1;
  const widest = HTTP_CONNECTIONS.at(-1) ?? BATCH_CONNECTIONS;
  const plan = [
    ...BATCH_SIZES.map((size) => ({
      size,
      connections: BATCH_CONNECTIONS,
      entries: RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES,
    })),
    { size: largestSize, connections: widest, entries: RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES },
    { size: largestSize, connections: widest, entries: REDIS_BUILT_IN_HASH_MAX_LISTPACK_ENTRIES },
  ];
  const runs = [];
  let tool = "wrk";
  let largest: { stalenessMaxS: number; rssMb: Record<string, number> } | undefined;
  for (const [index, { size, connections, entries }] of plan.entries()) {
    await redisCommand(redisPort, "CONFIG", "SET", "hash-max-listpack-entries", String(entries));
    const body = JSON.stringify({
      increments: Array.from({ length: size }, (_, i) => ({ key: `bench:batch:${i}`, value: 1 })),
    });
    const options = { url: `${serviceUrl}/increments`, token, connections, keys: size, body };
    // A changed setting applies to hashes Redis creates from then on: the warm-up outlasts a sync cycle, so
    // the dirty hashes measured were created under it.
    await generateLoad({
      ...options,
      durationS: entries === RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES ? WARMUP_S : SYNC_CYCLE_S + WARMUP_S,
    });
    // Staleness and RSS while the largest batches ran at the connections single increments also ran at.
    const sampling = index === BATCH_SIZES.length - 1 ? sampleRss(service) : undefined;
    const from = new Date();
    const result = await generateLoad({ ...options, durationS: BATCH_DURATION_S });
    if (sampling) {
      largest = {
        stalenessMaxS: await worstStalenessBeforeCommits(pool, from, new Date()),
        rssMb: await sampling.stop(),
      };
    }
    tool = result.tool;
    const incrementsPerSecond = result.requestsPerSecond * size;
    runs.push({
      size,
      connections,
      hashMaxListpackEntries: entries,
      requestsPerSecond: result.requestsPerSecond,
      incrementsPerSecond,
      p99Ms: result.p99Ms,
      errors: result.errors,
      generatorCores: result.generatorCores,
    });
    log(
      `bench: batches of ${size}, ${connections} connections, hash-max-listpack-entries ${entries}: ${result.requestsPerSecond.toFixed(0)} req/s, ${incrementsPerSecond.toFixed(0)} increments/s, ${result.errors} errors (${result.tool} used ${result.generatorCores.toFixed(2)} cores)`,
    );
  }
  await redisCommand(
    redisPort,
    "CONFIG",
    "SET",
    "hash-max-listpack-entries",
    String(RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES),
  );
  // The load generator stops at its deadline with requests still in flight; the API answers them after.
  await sleep(2_000);
  const accepted = (await acceptedIncrements(metricsUrl)) - acceptedBefore;
  const persisted = await persistedOnceCaughtUp(pool, "bench:batch:%", accepted);
  log(`bench: batches: ${accepted} increments accepted, ${persisted} in Postgres`);
  // After the count above, which k6's increments would join.
  const k6Against = runs.find((r) => r.size === K6_BATCH_SIZE && r.connections === BATCH_CONNECTIONS);
  const k6 =
    k6Against &&
    (await measureK6Batches({
      serviceUrl,
      secret: SECRET,
      batchSize: K6_BATCH_SIZE,
      rate: Math.round(k6Against.requestsPerSecond),
    }));
  if (k6 === undefined) log("bench: k6 batch.js skipped: no k6 binary (K6_BIN, PATH or ../shared/bin/k6)");
  else {
    log(
      `bench: k6 batch.js, batches of ${K6_BATCH_SIZE} offered at ${k6.offeredRate}/s: ${k6.incrementsPerSecond.toFixed(0)} increments/s, ${k6.droppedIterations} dropped, k6 used ${k6.k6Cores.toFixed(2)} cores`,
    );
  }
  return {
    k6: k6 && k6Against && { run: k6, wrk: k6Against },
    tool,
    redisHincrbyPerSecond,
    durationS: BATCH_DURATION_S,
    runs,
    accepted,
    persisted,
    stalenessMaxS: largest?.stalenessMaxS ?? Number.NaN,
    rssMb: largest?.rssMb ?? {},
  };
}

interface BatchTarget {
  serviceUrl: string;
  metricsUrl: string;
  token: string;
  redisPort: number;
  pool: pg.Pool;
}

/** The sum of the counters matching `pattern`, once it reaches `expected` or stops moving for 15 s. */
async function persistedOnceCaughtUp(pool: pg.Pool, pattern: string, expected: number): Promise<number> {
  let last = Number.NaN;
  let movedAt = performance.now();
  for (;;) {
    const { rows } = await pool.query<{ sum: string | null }>(
      "SELECT sum(value)::text AS sum FROM counters WHERE key LIKE $1",
      [pattern],
    );
    const sum = Number(rows[0]?.sum ?? 0);
    if (sum === expected) return sum;
    if (sum !== last) {
      last = sum;
      movedAt = performance.now();
    } else if (performance.now() - movedAt > 15_000) {
      return sum;
    }
    await sleep(500);
  }
}

/**
 * Increments per second through the Node client with its default options, from this process: callers that
 * each keep CLIENT_CALLS_IN_FLIGHT calls going, as a busy server's request handlers would. The calls in
 * flight at once are for distinct keys, so each is an item of its own: the figure is not one of summing.
 */
async function measureClient(serviceUrl: string, token: string) {
  const client = new TallyClient({ url: serviceUrl, token });
  let stop = false;
  const run = async (durationS: number) => {
    stop = false;
    const before = client.stats.incrementsAccepted;
    const began = performance.now();
    const timer = setTimeout(() => {
      stop = true;
    }, durationS * 1_000);
    await Promise.all(
      Array.from({ length: CLIENT_CALLERS }, async (_, caller) => {
        for (let round = 0; !stop; round++) {
          await Promise.all(
            Array.from({ length: CLIENT_CALLS_IN_FLIGHT }, (_, i) =>
              client.increment(
                `bench:client:${(caller * CLIENT_CALLS_IN_FLIGHT + i + round * CLIENT_CALLERS * CLIENT_CALLS_IN_FLIGHT) % CLIENT_KEYS}`,
              ),
            ),
          );
        }
      }),
    );
    clearTimeout(timer);
    return ((client.stats.incrementsAccepted - before) * 1_000) / (performance.now() - began);
  };
  await run(WARMUP_S);
  const batchesBefore = client.stats.batchesAccepted;
  const acceptedBefore = client.stats.incrementsAccepted;
  const incrementsPerSecond = await run(BATCH_DURATION_S);
  await client.close();
  const { stats } = client;
  const batches = stats.batchesAccepted - batchesBefore;
  log(`bench: client: ${incrementsPerSecond.toFixed(0)} increments/s, ${stats.incrementsFailed} failed`);
  return {
    callers: CLIENT_CALLERS,
    callsInFlight: CLIENT_CALLS_IN_FLIGHT,
    keys: CLIENT_KEYS,
    durationS: BATCH_DURATION_S,
    incrementsPerSecond,
    callsPerBatch: (stats.incrementsAccepted - acceptedBefore) / Math.max(1, batches),
    failed: stats.incrementsFailed,
    retries: stats.retries,
  };
}

/** A baseline server from bench/baselines/, on its own port, with as many workers as the service. */
async function startBaseline(name: "bare-http" | "minimal-hono", workers: number, redisUrl: string) {
  const port = await freePort();
  const server = spawnTally(`bench/baselines/${name}.ts`, {}, [String(port), String(workers), redisUrl]);
  cleanups.push(() => server.stop("SIGKILL"));
  await server.waitForLog((line) => String(line.msg).startsWith(`${name} listening`));
  log(`bench: ${name} at http://127.0.0.1:${port}`);
  return { server, url: `http://127.0.0.1:${port}` };
}

/**
 * Alternates the two baselines and the service under the same load, so drift on a shared machine hits all
 * three alike.
 */
async function measureHttp(
  service: TallyProcess,
  serviceUrl: string,
  token: string,
  { workers, redisUrl }: { workers: number; redisUrl: string },
): Promise<{ http: HttpRun[]; serviceRssMb: Record<string, number> }> {
  const bare = await startBaseline("bare-http", workers, redisUrl);
  const hono = await startBaseline("minimal-hono", workers, redisUrl);
  const http: HttpRun[] = [];
  let serviceRssMb: Record<string, number> = {};
  for (const connections of HTTP_CONNECTIONS) {
    const target = (base: string) => ({ token, connections, keys: HTTP_KEYS, url: `${base}/increment` });
    for (const url of [bare.url, hono.url, serviceUrl])
      await generateLoad({ ...target(url), durationS: WARMUP_S });
    const bareRuns: LoadResult[] = [];
    const honoRuns: LoadResult[] = [];
    const serviceRuns: LoadResult[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      bareRuns.push(await generateLoad({ ...target(bare.url), durationS: DURATION_S }));
      honoRuns.push(await generateLoad({ ...target(hono.url), durationS: DURATION_S }));
      const sampling = sampleRss(service);
      serviceRuns.push(await generateLoad({ ...target(serviceUrl), durationS: DURATION_S }));
      serviceRssMb = maxRss(serviceRssMb, await sampling.stop());
      log(
        `bench: ${connections} connections, round ${round}: bare ${fmt(bareRuns.at(-1))} | minimal hono ${fmt(honoRuns.at(-1))} | service ${fmt(serviceRuns.at(-1))} req/s (the load generator used ${serviceRuns.at(-1)?.generatorCores.toFixed(2)} cores against tally)`,
      );
    }
    http.push({
      tool: serviceRuns[0]?.tool ?? "wrk",
      connections,
      durationS: DURATION_S,
      rounds: ROUNDS,
      workers,
      bare: bareRuns,
      minimalHono: honoRuns,
      service: serviceRuns,
    });
  }
  await Promise.all([bare.server.stop("SIGKILL"), hono.server.stop("SIGKILL")]);
  return { http, serviceRssMb };
}

/** Where `npm start` serves the API's metrics: it prints the address once it listens. */
async function apiMetricsUrl(service: TallyProcess): Promise<string> {
  const line = await service.waitForLog((entry) => /metrics at \S+ \(api\)/.test(String(entry.msg)));
  const url = /metrics at (\S+) \(api\)/.exec(String(line.msg))?.[1];
  if (url === undefined) throw new Error(`no API metrics address in ${JSON.stringify(line)}`);
  return url;
}

async function waitUntilReady(service: TallyProcess, url: string): Promise<string> {
  for (let attempt = 0; attempt < 300; attempt++) {
    try {
      if ((await fetch(`${url}/readyz`)).ok) return url;
    } catch {
      // Not listening yet.
    }
    await sleep(100);
  }
  throw new Error(`service did not become ready:\n${JSON.stringify(service.logs.slice(-10))}`);
}

function sampleRss(service: TallyProcess): { stop(): Promise<Record<string, number>> } {
  let peak: Record<string, number> = {};
  const timer = setInterval(() => {
    peak = maxRss(peak, rssOfTree(service.child.pid ?? 0));
  }, 500);
  return {
    async stop() {
      clearInterval(timer);
      return peak;
    },
  };
}

function maxRss(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const merged = { ...a };
  for (const [name, mb] of Object.entries(b)) merged[name] = Math.max(merged[name] ?? 0, mb);
  return merged;
}

/**
 * HTTP load plus 100,000 distinct keys landing in the dirty hash in every 5 s cycle, while Postgres' staleness
 * is sampled every 250 ms. `keys` says which 100,000: "recurring" are the same counters every cycle (the
 * steady state: counters are incremented again and again), "new" are never seen before (a table that grows
 * by 100,000 rows per cycle, the worst case). The keys are written with HSET, many fields per command:
 * they stand for the effect of many clients' increments on the dirty hash; the cost of serving those
 * clients is what the HTTP load stands for.
 */
async function measureStaleness(
  redis: RedisClient,
  pool: pg.Pool,
  serviceUrl: string,
  token: string,
  keys: "recurring" | "new",
  keyspace: Keyspace,
) {
  const shards = keyspace.shards.length;
  if (keys === "recurring") {
    // The counters exist already, as they do in the steady state.
    await pool.query(
      `INSERT INTO counters (key, value, updated_at)
       SELECT 'stale:' || i, 0, now() FROM generate_series(0, $1::int - 1) AS i ON CONFLICT (key) DO NOTHING`,
      [STALENESS_KEYS_PER_CYCLE],
    );
  }
  let injected = 0;
  let stop = false;
  const injector = (async () => {
    for (let cycle = 0; !stop; cycle++) {
      const began = performance.now();
      const names = Array.from({ length: STALENESS_KEYS_PER_CYCLE }, (_, i) =>
        keys === "new" ? `stale:${cycle}:${i}` : `stale:${i}`,
      );
      await incrementInShards(redis, keyspace, names);
      injected += STALENESS_KEYS_PER_CYCLE;
      await sleep(Math.max(0, 5_000 - (performance.now() - began)));
    }
  })();
  const load = generateLoad({
    url: `${serviceUrl}/increment`,
    token,
    connections: 16,
    durationS: STALENESS_WARMUP_S + STALENESS_WATCH_S,
    keys: HTTP_KEYS,
  });
  const warmupSamples: number[] = [];
  const samples: number[] = [];
  const warmupUntil = new Date(Date.now() + STALENESS_WARMUP_S * 1_000);
  const watchUntil = new Date(warmupUntil.getTime() + STALENESS_WATCH_S * 1_000);
  while (Date.now() < watchUntil.getTime()) {
    const { rows } = await pool.query<{ s: number | null }>(
      "SELECT extract(epoch FROM now() - min(synced_through))::float8 AS s FROM sync_state",
    );
    if (rows[0]?.s != null) (Date.now() < warmupUntil.getTime() ? warmupSamples : samples).push(rows[0].s);
    await sleep(250);
  }
  stop = true;
  await injector;
  const http = await load;
  samples.sort((a, b) => a - b);
  return {
    keys,
    keysPerCycle: STALENESS_KEYS_PER_CYCLE,
    injectedKeys: injected,
    httpRequestsPerSecond: http.requestsPerSecond,
    shards,
    maxS: await worstStalenessBeforeCommits(pool, warmupUntil, watchUntil),
    longestApplyS: await longestSwapToCommit(pool, warmupUntil, watchUntil),
    p50S: samples[Math.floor(samples.length / 2)] ?? Number.NaN,
    warmupMaxS: warmupSamples.length > 0 ? Math.max(...warmupSamples) : Number.NaN,
  };
}

function medianOf(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

function fmt(result: LoadResult | undefined): string {
  return result ? result.requestsPerSecond.toFixed(0) : "?";
}
