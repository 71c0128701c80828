import { RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES } from "../lib/redis/hash-encoding.ts";
import type { LoadResult } from "../tools/load/throughput.ts";
import { EVERYTHING_ON, type FeatureCosts, type FeatureRun } from "./features.ts";
import type { K6BatchRun } from "./k6-batches.ts";
import type { Comparison, MeasuredLoad, ReplicaResults } from "./replicas.ts";
import type { CurvePoint } from "./staleness-curve.ts";
import type { SyncerThroughput } from "./syncer-throughput.ts";

/** Single increments from one load generator at one connection count: the baselines and tally, alternating. */
export interface HttpRun {
  /** The load generator. */
  tool: string;
  connections: number;
  durationS: number;
  rounds: number;
  /** API workers of the service, and of each baseline. */
  workers: number;
  /** bench/baselines/bare-http.ts: node:http, parse the JSON, 202. */
  bare: LoadResult[];
  /** bench/baselines/minimal-hono.ts: Hono + ioredis HINCRBY, nothing else. */
  minimalHono: LoadResult[];
  service: LoadResult[];
}

/** What `npm run bench` measured: each section is there when it was run. */
export interface BenchResults {
  machine: { cores: number; node: string };
  /** One entry per connection count. */
  http?: HttpRun[];
  serviceRssMb?: Record<string, number>;
  staleness?: {
    /** "recurring": the same keys every cycle (steady state); "new": keys never seen before. */
    keys: "recurring" | "new";
    keysPerCycle: number;
    /** SYNC_SHARDS of the service: each shard's batch holds about 1/shards of the keys. */
    shards: number;
    injectedKeys: number;
    httpRequestsPerSecond: number;
    /** Exact: the worst moment before a commit, from the ledger (see worstStalenessBeforeCommits). */
    maxS: number;
    /** The longest swap → commit of one batch: staleness peaks at about the 5 s cycle plus this. */
    longestApplyS: number;
    /** Of samples every 250 ms. */
    p50S: number;
    /** Sampled, in the warm-up (the first two cycles), which the figures above leave out. */
    warmupMaxS: number;
  }[];
  syncer?: SyncerThroughput[];
  /** Keys per cycle → worst staleness, for one or more syncers at a SYNC_CONCURRENCY. */
  curve?: CurvePoint[];
  /** CPU per single increment with each feature switched off (or used), in one run. */
  features?: FeatureCosts;
  /** Acknowledgements that wait for one replica against none, on a master with one replica. */
  replicas?: ReplicaResults;
  /** The Node client with its default options, from the bench's own process. */
  client?: {
    callers: number;
    callsInFlight: number;
    keys: number;
    durationS: number;
    incrementsPerSecond: number;
    /** Calls carried per POST /increments (several calls for one key are one item). */
    callsPerBatch: number;
    failed: number;
    retries: number;
  };
  batches?: {
    tool: string;
    /** redis-benchmark -P 1000 HINCRBY on the same Redis, in the same run. */
    redisHincrbyPerSecond: number;
    durationS: number;
    runs: {
      size: number;
      connections: number;
      /** Redis' hash-max-listpack-entries while it ran: the recommended 32, or Redis' built-in 512. */
      hashMaxListpackEntries: number;
      requestsPerSecond: number;
      incrementsPerSecond: number;
      p99Ms: number;
      errors: number;
      /** Cores the load generator itself used. */
      generatorCores: number;
    }[];
    /** k6/batch.js offered the rate wrk reached with the same batch size; absent without a k6 binary. */
    k6?: { run: K6BatchRun; wrk: { connections: number; incrementsPerSecond: number } };
    /** Increments the API counted as accepted over the whole section, and the sum Postgres holds after. */
    accepted: number;
    persisted: number;
    /** Exact, from the ledger, while the largest batches ran. */
    stalenessMaxS: number;
    /** Peak RSS per process while the largest batches ran. */
    rssMb: Record<string, number>;
  };
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
};

export function summarize(http: HttpRun) {
  const rate = (runs: LoadResult[]) => median(runs.map((run) => run.requestsPerSecond));
  const bare = rate(http.bare);
  const minimalHono = rate(http.minimalHono);
  const service = rate(http.service);
  return { bare, minimalHono, service, toMinimalHono: service / minimalHono, toBare: service / bare };
}

const perRound = (runs: LoadResult[], baselines: LoadResult[]) =>
  runs
    .map((run, i) => (run.requestsPerSecond / (baselines[i]?.requestsPerSecond ?? Number.NaN)).toFixed(2))
    .join(", ");

export function renderReport(results: BenchResults): string {
  const { http, syncer, staleness, serviceRssMb } = results;
  const lines = [
    "# tally benchmark",
    "",
    `${results.machine.cores} cores, Node ${results.machine.node}.`,
    "",
  ];
  for (const run of http ?? []) {
    const { bare, minimalHono, service, toMinimalHono, toBare } = summarize(run);
    const row = (name: string, runs: LoadResult[]) =>
      `| ${name} | ${median(runs.map((r) => r.requestsPerSecond)).toFixed(0)} | ${median(runs.map((r) => r.p50Ms)).toFixed(2)} | ${median(runs.map((r) => r.p99Ms)).toFixed(2)} | ${runs.reduce((sum, r) => sum + r.errors, 0)} | ${median(runs.map((r) => r.generatorCores)).toFixed(2)} |`;
    lines.push(
      `## HTTP: POST /increment, ${run.connections} connections`,
      "",
      `Load from ${run.tool} (${run.connections} connections, ${run.durationS} s per run, ${run.rounds} ` +
        `alternating rounds, medians), ${run.workers} workers in each server. tally runs as \`npm start\` does ` +
        "(its syncer beside it), with auth, rate limiting, validation, request ids, logs and metrics on.",
      "",
      `| server | req/s | p50 ms | p99 ms | errors | ${run.tool}'s own CPU (cores) |`,
      "| --- | --- | --- | --- | --- | --- |",
      row("bare node:http (parse JSON, 202)", run.bare),
      row("minimal Hono + ioredis HINCRBY", run.minimalHono),
      row("tally", run.service),
      "",
      `**tally / minimal Hono = ${toMinimalHono.toFixed(2)}** (${service.toFixed(0)} / ${minimalHono.toFixed(0)} req/s; ` +
        `per round: ${perRound(run.service, run.minimalHono)}); tally / bare node:http = ${toBare.toFixed(2)} ` +
        `(${service.toFixed(0)} / ${bare.toFixed(0)}; per round: ${perRound(run.service, run.bare)})`,
      "",
    );
  }
  const { batches } = results;
  if (batches) {
    lines.push(
      "## Batches: POST /increments",
      "",
      `Load from ${batches.tool} (${batches.durationS} s per run), one batch body of distinct keys repeated; auth and rate limiting on (a point per increment). Against \`redis-benchmark -P 1000\` \`HINCRBY\` on the same Redis in the same run: ${batches.redisHincrbyPerSecond.toFixed(0)}/s. The last run sets Redis' \`hash-max-listpack-entries\` to its built-in default, to show what the recommended setting (docs/operations.md) is worth.`,
      "",
      `| increments per request | connections | hash-max-listpack-entries | req/s | increments/s | p99 ms | errors | ${batches.tool}'s own CPU (cores) | increments / redis-benchmark |`,
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
      ...batches.runs.map(
        (r) =>
          `| ${r.size} | ${r.connections} | ${r.hashMaxListpackEntries} | ${r.requestsPerSecond.toFixed(0)} | ${r.incrementsPerSecond.toFixed(0)} | ${r.p99Ms.toFixed(1)} | ${r.errors} | ${r.generatorCores.toFixed(2)} | ${(r.incrementsPerSecond / batches.redisHincrbyPerSecond).toFixed(2)} |`,
      ),
      "",
      `While the largest batches ran: staleness at most **${batches.stalenessMaxS.toFixed(2)} s** (exact, from the ledger); peak RSS ${Object.entries(
        batches.rssMb,
      )
        .map(([name, mb]) => `${name} ${mb} MB`)
        .join(", ")}.`,
      "",
      ...k6Lines(batches),
      `Exactly once: the API counted ${batches.accepted} increments as accepted over the section, and Postgres holds ${batches.persisted} (${batches.accepted === batches.persisted ? "equal" : "**NOT EQUAL**"}).`,
      "",
    );
  }
  const { features } = results;
  if (features) {
    const cpu = (runs: FeatureRun[]) => median(runs.map((run) => run.cpuUsPerRequest));
    const everything = cpu(features.variants.find((variant) => variant.name === EVERYTHING_ON)?.runs ?? []);
    lines.push(
      "## What each feature costs a single increment",
      "",
      `An API instance per variant in the bench process, driven through its fetch handler by ${features.callers} concurrent callers, ${features.durationS} s per run, ${features.rounds} rounds in alternating order, medians: the process' CPU per request (Node's HTTP parsing and sockets, the same for every variant, left out).`,
      "",
      "| variant | CPU µs per request | against everything on | per round | requests/s | non-202 answers |",
      "| --- | --- | --- | --- | --- | --- |",
      ...features.variants.map(({ name, runs }) => {
        const difference = cpu(runs) - everything;
        return `| ${name} | ${cpu(runs).toFixed(1)} | ${name === EVERYTHING_ON ? "—" : `${difference > 0 ? "+" : ""}${difference.toFixed(1)} µs`} | ${runs.map((run) => run.cpuUsPerRequest.toFixed(1)).join(", ")} | ${median(runs.map((run) => run.requestsPerSecond)).toFixed(0)} | ${runs.reduce((sum, run) => sum + run.errors, 0)} |`;
      }),
      "",
    );
  }
  const { client } = results;
  if (client) {
    lines.push(
      "## The Node client (default options)",
      "",
      `${client.callers} callers in the bench process, each keeping ${client.callsInFlight} \`increment()\` calls in flight over ${client.keys} keys, for ${client.durationS} s after a warm-up.`,
      "",
      "| increments/s | calls per request | failed calls | retries |",
      "| --- | --- | --- | --- |",
      `| ${client.incrementsPerSecond.toFixed(0)} | ${client.callsPerBatch.toFixed(0)} | ${client.failed} | ${client.retries} |`,
      "",
    );
  }
  if (syncer) {
    lines.push(
      "## Syncer: one batch of N distinct keys onto existing rows (median of 5, 3 and 1 runs)",
      "",
      "| keys | syncer ms | raw unnest upsert ms | syncer rows/s | raw / syncer |",
      "| --- | --- | --- | --- | --- |",
      ...syncer.map(
        (s) =>
          `| ${s.keys} | ${s.syncerMs.toFixed(0)} | ${s.rawUpsertMs.toFixed(0)} | ${((s.keys / s.syncerMs) * 1000).toFixed(0)} | ${(s.rawUpsertMs / s.syncerMs).toFixed(2)} |`,
      ),
      "",
    );
  }
  if (staleness) {
    lines.push(
      "## Staleness under load",
      "",
      `The service runs with its default ${staleness[0]?.shards} shards (\`SYNC_SHARDS\`), each key in its own: a shard's batch holds about 1/${staleness[0]?.shards} of a cycle's keys, and staleness peaks just before a commit at about the 5 s cycle plus that batch's swap → commit.`,
      "",
      "| keys per 5 s cycle | HTTP load req/s | staleness p50 s | staleness max s (exact) | longest swap → commit s | max s in the warm-up (not counted) |",
      "| --- | --- | --- | --- | --- | --- |",
      ...staleness.map(
        (run) =>
          `| ${run.keysPerCycle} ${run.keys === "new" ? "new (the table grows)" : "recurring (steady state)"} | ${run.httpRequestsPerSecond.toFixed(0)} | ${run.p50S.toFixed(1)} | **${run.maxS.toFixed(2)}** | ${run.longestApplyS.toFixed(2)} | ${run.warmupMaxS.toFixed(1)} |`,
      ),
      "",
    );
  }
  const { replicas } = results;
  if (replicas) {
    const row = (name: string, comparison: Comparison, kind: "single" | "batches") => {
      const { setting, baseline } = comparison[kind];
      const a = median(setting.map((r) => r.requestsPerSecond));
      const b = median(baseline.map((r) => r.requestsPerSecond));
      const cpu = (runs: MeasuredLoad[]) => median(runs.map((r) => r.cpuUsPerRequest)).toFixed(1);
      return `| ${name} | ${comparison.setting} / ${comparison.baseline} | ${a.toFixed(0)} / ${b.toFixed(0)} | **${(a / b).toFixed(2)}** (per round: ${perRound(setting, baseline)}) | ${cpu(setting)} / ${cpu(baseline)} | ${median(setting.map((r) => r.p99Ms)).toFixed(1)} / ${median(baseline.map((r) => r.p99Ms)).toFixed(1)} |`;
    };
    lines.push(
      "## Acknowledgements that wait for a replica",
      "",
      `Each setting an API node of its own (${replicas.workers} workers), measured in ${replicas.rounds} alternating rounds of ${replicas.durationS} s (medians) while a syncer drains. CPU is the node's (primary and workers), per request, from /proc.`,
      "",
      "| Redis, requests | setting / against | req/s | ratio | CPU µs per request | p99 ms |",
      "| --- | --- | --- | --- | --- | --- |",
      row("a master with one replica, POST /increment", replicas.withReplica, "single"),
      row(
        `a master with one replica, POST /increments of ${replicas.batchSize}`,
        replicas.withReplica,
        "batches",
      ),
      row("a single Redis, POST /increment", replicas.single, "single"),
      row(`a single Redis, POST /increments of ${replicas.batchSize}`, replicas.single, "batches"),
      "",
    );
  }
  const { curve } = results;
  if (curve) {
    lines.push(
      "## Keys per cycle → staleness",
      "",
      `Syncers in the bench process (each with its own connections) sharing ${curve[0]?.shards} shards, while that many recurring counters land in the dirty hashes every 5 s cycle and nothing else runs; 10 s warm-up, 20 s watched. Staleness is exact, from the ledger.`,
      "",
      "| keys per cycle | syncers | SYNC_CONCURRENCY | staleness max s | longest cycle s |",
      "| --- | --- | --- | --- | --- |",
      ...curve.map(
        (point) =>
          `| ${point.keysPerCycle} | ${point.syncers} | ${point.concurrency} | **${point.maxS.toFixed(2)}** | ${point.longestCycleS.toFixed(2)} |`,
      ),
      "",
    );
  }
  if (serviceRssMb) {
    lines.push(
      "## Memory (peak RSS during the HTTP runs)",
      "",
      "| process | RSS MB |",
      "| --- | --- |",
      ...Object.entries(serviceRssMb).map(([name, mb]) => `| ${name} | ${mb} |`),
      "",
    );
  }
  return lines.join("\n");
}

/**
 * A small self-contained SVG, each group against its baselines: HTTP throughput, increments per second by
 * batch size against redis-benchmark, syncer rows per second against the raw upsert.
 */
export function renderChart(results: BenchResults): string {
  const widest = results.http?.at(-1);
  const http = widest ? summarize(widest) : undefined;
  const bars: { label: string; value: number; group: number; ours: boolean }[] = [
    ...(http
      ? [
          { label: "bare node:http req/s", value: http.bare, group: 0, ours: false },
          { label: "minimal Hono req/s", value: http.minimalHono, group: 0, ours: false },
          { label: "tally req/s", value: http.service, group: 0, ours: true },
        ]
      : []),
    ...(results.batches
      ? [
          {
            label: "redis-benchmark HINCRBY/s",
            value: results.batches.redisHincrbyPerSecond,
            group: 1,
            ours: false,
          },
          ...results.batches.runs.map((r) => ({
            label: `batches of ${r.size}, ${r.connections} conns${r.hashMaxListpackEntries > RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES ? `, listpack ${r.hashMaxListpackEntries}` : ""}: incr/s`,
            value: r.incrementsPerSecond,
            group: 1,
            ours: true,
          })),
        ]
      : []),
    ...(results.syncer ?? []).flatMap((s) => [
      {
        label: `raw upsert ${s.keys / 1000}K keys/s`,
        value: (s.keys / s.rawUpsertMs) * 1000,
        group: 2,
        ours: false,
      },
      { label: `syncer ${s.keys / 1000}K keys/s`, value: (s.keys / s.syncerMs) * 1000, group: 2, ours: true },
    ]),
  ];
  const width = 720;
  const barHeight = 22;
  const gap = 8;
  const left = 200;
  const height = bars.length * (barHeight + gap) + 60;
  const maxByGroup = [0, 1, 2].map((group) =>
    Math.max(...bars.filter((b) => b.group === group).map((b) => b.value)),
  );
  const rows = bars.map((bar, i) => {
    const y = 40 + i * (barHeight + gap);
    const w = ((width - left - 90) * bar.value) / (maxByGroup[bar.group] || 1);
    const colour = bar.ours ? "#2f6fb3" : "#9aa5b1";
    return [
      `<text x="${left - 8}" y="${y + 15}" text-anchor="end" font-size="12">${bar.label}</text>`,
      `<rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="${barHeight}" fill="${colour}"/>`,
      `<text x="${left + w + 6}" y="${y + 15}" font-size="12">${bar.value.toFixed(0)}</text>`,
    ].join("");
  });
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="22" font-size="14" font-weight="bold">tally vs baselines, same run (bars scaled per group)</text>`,
    ...rows,
    "</svg>",
  ].join("\n");
}

/** k6/batch.js beside wrk, with the batch size and rate it was offered and what k6 itself took. */
function k6Lines(batches: NonNullable<BenchResults["batches"]>): string[] {
  if (batches.k6 === undefined) {
    return ["k6/batch.js was not run (no k6 binary: K6_BIN, PATH or ../shared/bin/k6).", ""];
  }
  const { run: k6, wrk } = batches.k6;
  const ratio = k6.incrementsPerSecond / wrk.incrementsPerSecond;
  return [
    `k6/batch.js (load mode, batches of ${k6.batchSize}, ${k6.durationS} s) offered the ${k6.offeredRate} batches/s wrk reached with ${wrk.connections} connections: **${k6.incrementsPerSecond.toFixed(0)} increments/s, ${ratio.toFixed(2)} × wrk's ${wrk.incrementsPerSecond.toFixed(0)}**; ${k6.droppedIterations} iterations k6 could not start in time, ${k6.failedRequests} failed requests, p95 ${k6.p95Ms.toFixed(1)} ms, k6 itself ${k6.k6Cores.toFixed(2)} cores; its thresholds ${k6.thresholdsPassed ? "passed" : "failed"}.`,
    "",
  ];
}
