import type { LoadResult } from "../tools/load/throughput.ts";
import type { SyncerThroughput } from "./syncer-throughput.ts";

/** What `npm run bench` measured: each section is there when it was run. */
export interface BenchResults {
  machine: { cores: number; node: string };
  http?: {
    /** The load generator. */
    tool: string;
    connections: number;
    durationS: number;
    rounds: number;
    baseline: LoadResult[];
    service: LoadResult[];
  };
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
  batches?: {
    /** redis-benchmark -P 1000 HINCRBY on the same Redis, in the same run. */
    redisHincrbyPerSecond: number;
    connections: number;
    durationS: number;
    sizes: {
      size: number;
      requestsPerSecond: number;
      incrementsPerSecond: number;
      p99Ms: number;
      errors: number;
    }[];
  };
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
};

export function summarize(http: NonNullable<BenchResults["http"]>) {
  const baseline = median(http.baseline.map((run) => run.requestsPerSecond));
  const service = median(http.service.map((run) => run.requestsPerSecond));
  return { baseline, service, ratio: service / baseline };
}

export function renderReport(results: BenchResults): string {
  const { http, syncer, staleness, serviceRssMb } = results;
  const lines = [
    "# tally benchmark",
    "",
    `${results.machine.cores} cores, Node ${results.machine.node}.`,
    "",
  ];
  if (http) {
    const { baseline, service, ratio } = summarize(http);
    const row = (name: string, runs: LoadResult[]) =>
      `| ${name} | ${median(runs.map((r) => r.requestsPerSecond)).toFixed(0)} | ${median(runs.map((r) => r.p50Ms)).toFixed(2)} | ${median(runs.map((r) => r.p99Ms)).toFixed(2)} | ${runs.reduce((sum, r) => sum + r.errors, 0)} |`;
    lines.push(
      "## HTTP: POST /increment",
      "",
      `Load from ${http.tool} (${http.connections} connections, ${http.durationS} s per run, ${http.rounds} ` +
        "alternating rounds, medians). The service runs as `npm start` does, auth and rate limiting on.",
      "",
      "| server | req/s | p50 ms | p99 ms | errors |",
      "| --- | --- | --- | --- | --- |",
      row("bare node:http baseline (parse JSON, 202)", http.baseline),
      row("tally (JWT, rate limit, validation, Redis)", http.service),
      "",
      `**service / baseline = ${ratio.toFixed(2)}** (${service.toFixed(0)} / ${baseline.toFixed(0)} req/s); ` +
        `per round: ${http.service.map((run, i) => (run.requestsPerSecond / (http.baseline[i]?.requestsPerSecond ?? Number.NaN)).toFixed(2)).join(", ")}`,
      "",
    );
  }
  const { batches } = results;
  if (batches) {
    lines.push(
      "## Batches: POST /increments",
      "",
      `Load from autocannon (${batches.connections} connections, ${batches.durationS} s per size), one batch body of distinct keys repeated; auth and rate limiting on (a point per increment). Against \`redis-benchmark -P 1000\` \`HINCRBY\` on the same Redis in the same run: ${batches.redisHincrbyPerSecond.toFixed(0)}/s.`,
      "",
      "| increments per request | req/s | increments/s | p99 ms | errors | increments / redis-benchmark |",
      "| --- | --- | --- | --- | --- | --- |",
      ...batches.sizes.map(
        (s) =>
          `| ${s.size} | ${s.requestsPerSecond.toFixed(0)} | ${s.incrementsPerSecond.toFixed(0)} | ${s.p99Ms.toFixed(1)} | ${s.errors} | ${(s.incrementsPerSecond / batches.redisHincrbyPerSecond).toFixed(2)} |`,
      ),
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

/** A small self-contained SVG: HTTP throughput against the baseline, syncer time against the raw upsert. */
export function renderChart(results: BenchResults): string {
  const http = results.http ? summarize(results.http) : undefined;
  const bars: { label: string; value: number; unit: string; group: number }[] = [
    ...(http
      ? [
          { label: "baseline req/s", value: http.baseline, unit: "", group: 0 },
          { label: "tally req/s", value: http.service, unit: "", group: 0 },
        ]
      : []),
    ...(results.syncer ?? []).flatMap((s) => [
      {
        label: `raw upsert ${s.keys / 1000}K keys/s`,
        value: (s.keys / s.rawUpsertMs) * 1000,
        unit: "",
        group: 1,
      },
      { label: `syncer ${s.keys / 1000}K keys/s`, value: (s.keys / s.syncerMs) * 1000, unit: "", group: 1 },
    ]),
  ];
  const width = 720;
  const barHeight = 22;
  const gap = 8;
  const left = 200;
  const height = bars.length * (barHeight + gap) + 60;
  const maxByGroup = [0, 1].map((group) =>
    Math.max(...bars.filter((b) => b.group === group).map((b) => b.value)),
  );
  const rows = bars.map((bar, i) => {
    const y = 40 + i * (barHeight + gap);
    const w = ((width - left - 90) * bar.value) / (maxByGroup[bar.group] || 1);
    const colour = bar.label.startsWith("tally") || bar.label.startsWith("syncer") ? "#2f6fb3" : "#9aa5b1";
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
