import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import pg from "pg";
import { mintToken } from "../lib/tokens.ts";
import { Accounting, sendIncrement } from "../tools/load/increment.ts";
import { type PostgresServer, startMigratedPostgres } from "../tools/servers/postgres.ts";
import { type RedisServer, startRedis } from "../tools/servers/redis.ts";
import { spawnTally, type TallyProcess } from "../tools/tally-process.ts";

// `npm run soak -- [--rps 1000] [--duration 300] [--keys 10000]`
//
// A fixed request rate for a set time against throwaway Redis and Postgres, with an API process and a
// syncer process as production runs them. Every 10 s it prints the achieved rate, client latency, each
// process's RSS and event-loop delay (from their "process stats" log lines) and the Postgres staleness;
// at the end it checks that Postgres holds exactly the accepted increments. Loopback only; it stops by
// itself. Not part of CI: it takes as long as you ask it to.

const { values } = parseArgs({
  options: {
    rps: { type: "string", default: "1000" },
    duration: { type: "string", default: "300" },
    keys: { type: "string", default: "10000" },
  },
});
const rps = Number(values.rps);
const durationS = Number(values.duration);
const keyCount = Number(values.keys);
if (![rps, durationS, keyCount].every((n) => Number.isInteger(n) && n > 0)) {
  process.stderr.write("usage: npm run soak -- [--rps 1000] [--duration 300] [--keys 10000]\n");
  process.exit(64);
}

const SECRET = "soak-secret-0123456789abcdef0123456789abcdef";
const REPORT_EVERY_MS = 10_000;
const TICK_MS = 5;
// Past this many requests in flight the service is not keeping up; piling on more would measure the
// client, not the service.
const MAX_IN_FLIGHT = 2_000;

const cleanups: (() => Promise<unknown>)[] = [];
let redis: RedisServer | undefined;
let postgres: PostgresServer | undefined;

try {
  [redis, postgres] = await Promise.all([startRedis(), startMigratedPostgres()]);
  cleanups.push(
    () => (redis as RedisServer).destroy(),
    () => (postgres as PostgresServer).destroy(),
  );
  const databaseUrl = postgres.url("postgres");

  const env = {
    REDIS_URL: redis.url,
    DATABASE_URL: databaseUrl,
    JWT_SECRET: SECRET,
    RATE_LIMIT_POINTS: String(rps * 10),
    STATS_LOG_INTERVAL_MS: "5000",
    // One API process, so its RSS and event-loop delay are the figures reported.
    API_WORKERS: "1",
    HOST: "127.0.0.1",
    PORT: "0",
    // Two processes on one host: each takes a free metrics port.
    METRICS_PORT: "0",
  };
  const api = spawnTally("api/main.ts", env);
  const syncer = spawnTally("syncer/main.ts", env);
  cleanups.push(
    () => api.stop("SIGKILL"),
    () => syncer.stop("SIGKILL"),
  );
  const baseUrl = String((await api.waitForLog((line) => line.msg === "api listening")).url);
  await syncer.waitForLog((line) => line.msg === "syncer started");
  const token = await mintToken({ secret: SECRET, subject: "soak", scopes: ["counters:write"] });
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 1 });
  cleanups.push(() => pool.end());

  const accounting = new Accounting();
  const stats = { sent: 0, accepted: 0, rejected: 0, unknown: 0, inFlight: 0, skipped: 0 };
  let latencies: number[] = [];

  const send = async (key: string, value: number) => {
    stats.inFlight++;
    const began = performance.now();
    const { outcome } = await sendIncrement(baseUrl, token, { key, value }, 10_000);
    stats[outcome]++;
    accounting.record(key, value, outcome);
    stats.inFlight--;
    latencies.push(performance.now() - began);
  };

  console.log(`soak: ${rps} req/s for ${durationS} s over ${keyCount} keys against ${baseUrl}`);
  console.log(
    "elapsed | req/s | p50 ms | p99 ms | errors | api rss MB | api loop p99 ms | syncer rss MB | staleness s",
  );
  const started = performance.now();
  let nextReport = started + REPORT_EVERY_MS;
  let sentAtLastReport = 0;
  // Open loop: requests go out on schedule whether or not earlier ones were answered, as real clients do;
  // the schedule is kept against the clock, so a late timer tick does not lower the rate.
  while (performance.now() - started < durationS * 1_000) {
    const due = Math.floor((rps * (performance.now() - started)) / 1_000);
    while (stats.sent + stats.skipped < due) {
      if (stats.inFlight >= MAX_IN_FLIGHT) {
        stats.skipped++;
        continue;
      }
      stats.sent++;
      void send(`soak:${Math.floor(Math.random() * keyCount)}`, 1 + Math.floor(Math.random() * 100));
    }
    await new Promise((resolve) => setTimeout(resolve, TICK_MS));
    if (performance.now() >= nextReport) {
      const elapsed = (performance.now() - started) / 1_000;
      const rate = (stats.sent - sentAtLastReport) / (REPORT_EVERY_MS / 1_000);
      sentAtLastReport = stats.sent;
      const sorted = latencies.sort((a, b) => a - b);
      latencies = [];
      const apiStats = lastStats(api);
      const syncerStats = lastStats(syncer);
      console.log(
        [
          `${elapsed.toFixed(0).padStart(6)}s`,
          rate.toFixed(0).padStart(5),
          percentile(sorted, 50).toFixed(1).padStart(6),
          percentile(sorted, 99).toFixed(1).padStart(6),
          String(stats.unknown + stats.rejected).padStart(6),
          String(rssMb(api) ?? apiStats?.rssMb ?? "?").padStart(10),
          String(apiStats?.eventLoopDelayMs?.p99 ?? "?").padStart(15),
          String(rssMb(syncer) ?? syncerStats?.rssMb ?? "?").padStart(13),
          (await staleness(pool)).toFixed(1).padStart(11),
        ].join(" | "),
      );
      nextReport += REPORT_EVERY_MS;
    }
  }
  while (stats.inFlight > 0) await new Promise((resolve) => setTimeout(resolve, 20));

  // Drained when the syncer has committed everything: totals equal, or out of time.
  const deadline = Date.now() + 30_000;
  let violations: string[] = [];
  do {
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    violations = accounting.violations(await persisted(pool));
  } while (violations.length > 0 && Date.now() < deadline);

  console.log(
    `\nsent ${stats.sent}, accepted ${stats.accepted}, rejected ${stats.rejected}, unknown outcome ${stats.unknown}, ` +
      `not sent (over ${MAX_IN_FLIGHT} in flight) ${stats.skipped}`,
  );
  if (violations.length === 0) {
    console.log(
      `exactness: OK — Postgres holds exactly the accepted increments for all ${accounting.keys} keys`,
    );
  } else {
    console.log(
      `exactness: FAILED for ${violations.length} keys, e.g.\n  ${violations.slice(0, 10).join("\n  ")}`,
    );
    process.exitCode = 1;
  }
} finally {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
}

interface StatsLine {
  rssMb?: number;
  eventLoopDelayMs?: { p99?: number };
}

function lastStats(service: TallyProcess): StatsLine | undefined {
  return service.logs.findLast((line) => line.msg === "process stats") as StatsLine | undefined;
}

/** The kernel's figure, which includes what the process's own stats cannot see (native buffers). */
function rssMb(service: TallyProcess): number | undefined {
  try {
    const status = readFileSync(`/proc/${service.child.pid}/status`, "utf8");
    const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
    return Number.isFinite(kb) ? Math.round(kb / 1024) : undefined;
  } catch {
    return undefined;
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

async function staleness(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ s: number | null }>(
    "SELECT extract(epoch FROM now() - min(synced_through))::float8 AS s FROM sync_state",
  );
  return rows[0]?.s ?? Number.NaN;
}

async function persisted(pool: pg.Pool): Promise<Map<string, bigint>> {
  const { rows } = await pool.query<{ key: string; value: string }>("SELECT key, value::text FROM counters");
  return new Map(rows.map((row) => [row.key, BigInt(row.value)]));
}
