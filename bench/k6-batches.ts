import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { runSampled } from "../tools/load/throughput.ts";
import { findK6 } from "../tools/servers/binaries.ts";

// k6/batch.js against the bench's service, offered the rate wrk reached with the same batch size: what a
// user running the k6 scenario sees beside what the bench says, and how much of the machine k6 itself takes.

const DURATION_S = 10;
// k6 exits 99 when a threshold of the script fails; the figures are still in its summary.
const THRESHOLDS_FAILED = 99;

export interface K6BatchRun {
  batchSize: number;
  /** Batches per second offered (constant arrival rate). */
  offeredRate: number;
  durationS: number;
  incrementsPerSecond: number;
  /** Iterations k6 could not start in time: what it could not send, not what the service refused. */
  droppedIterations: number;
  failedRequests: number;
  /** Of the batches k6 sent (its summary export has no p(99) by default). */
  p95Ms: number;
  k6Cores: number;
  thresholdsPassed: boolean;
}

interface SummaryMetric {
  count?: number;
  rate?: number;
  passes?: number;
  "p(95)"?: number;
}

/** Runs the scenario; undefined when no k6 binary is found (K6_BIN, PATH or ../shared/bin/k6). */
export async function measureK6Batches(options: {
  serviceUrl: string;
  secret: string;
  batchSize: number;
  rate: number;
}): Promise<K6BatchRun | undefined> {
  const k6 = findK6();
  if (k6 === undefined) return undefined;
  const dir = await mkdtemp(path.join(tmpdir(), "tally-k6-"));
  try {
    const summaryFile = path.join(dir, "summary.json");
    const script = fileURLToPath(new URL("../k6/batch.js", import.meta.url));
    const { generatorCores, exitCode } = await runSampled(
      k6,
      ["run", "--quiet", "--no-color", `--summary-export=${summaryFile}`, script],
      {
        ...process.env,
        BASE_URL: options.serviceUrl,
        JWT_SECRET: options.secret,
        BATCH_SIZE: String(options.batchSize),
        RATE: String(options.rate),
        DURATION: `${DURATION_S}s`,
        K6_NO_USAGE_REPORT: "true",
      },
      [0, THRESHOLDS_FAILED],
    );
    const { metrics } = JSON.parse(await readFile(summaryFile, "utf8")) as {
      metrics: Record<string, SummaryMetric | undefined>;
    };
    return {
      batchSize: options.batchSize,
      offeredRate: options.rate,
      durationS: DURATION_S,
      incrementsPerSecond: metrics.tally_batch_increments_accepted?.rate ?? 0,
      droppedIterations: metrics.dropped_iterations?.count ?? 0,
      failedRequests: metrics.http_req_failed?.passes ?? 0,
      // Every request of the load mode is a batch: the tagged series and the whole are the same requests.
      p95Ms:
        (metrics["http_req_duration{name:increments}"] ?? metrics.http_req_duration)?.["p(95)"] ?? Number.NaN,
      k6Cores: generatorCores,
      thresholdsPassed: exitCode === 0,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
