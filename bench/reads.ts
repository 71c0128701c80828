import { availableParallelism } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { mintToken } from "../lib/tokens.ts";
import { freePort } from "../tools/servers/ports.ts";
import { spawnTally } from "../tools/tally-process.ts";
import { startBenchStores } from "./stores.ts";

// `npm run bench:reads [counters]`: the reads of issue 22 on a table of `counters` rows (10 million by
// default): POST /read of 1,000 keys per request against single GET /counters/{key} reads of the same keys,
// with one load generator in one run, and the latency of GET /counters pages at random places in the table. Throwaway Redis and
// Postgres on loopback; it stops by itself (seeding 10 million rows takes a few minutes).

const SECRET = "bench-secret-0123456789abcdef0123456789abcdef";
const ROWS = Number(process.argv[2] ?? 10_000_000);
const READ_KEYS = 1_000;
const CONNECTIONS = 8;
const DURATION_S = 10;
const PAGES = 300;
const PAGE_SIZE = 100;

const log = (line: string) => process.stdout.write(`${line}\n`);
const keyOf = (i: number) => `bench:${String(i).padStart(8, "0")}`;
const cleanups: (() => Promise<unknown>)[] = [];

try {
  const { redisServer, databaseUrl, pool } = await startBenchStores("bench-reads", cleanups);

  const seeding = performance.now();
  // Rows first and the primary key after: one sorted build instead of ten million index insertions.
  await pool.query("ALTER TABLE counters DROP CONSTRAINT counters_pkey");
  await pool.query(
    `INSERT INTO counters (key, value, updated_at)
     SELECT 'bench:' || lpad(i::text, 8, '0'), i, now() FROM generate_series(1, $1::int) i`,
    [ROWS],
  );
  await pool.query("ALTER TABLE counters ADD PRIMARY KEY (key)");
  await pool.query("VACUUM ANALYZE counters");
  log(`bench: ${ROWS} counters in ${((performance.now() - seeding) / 1000).toFixed(0)} s`);

  const port = await freePort();
  const api = spawnTally("api/main.ts", {
    REDIS_URL: redisServer.url,
    DATABASE_URL: databaseUrl,
    JWT_SECRET: SECRET,
    RATE_LIMIT_POINTS: "1000000000",
    API_WORKERS: "1",
    HOST: "127.0.0.1",
    PORT: String(port),
    LOG_LEVEL: "warn",
  });
  cleanups.push(() => api.stop("SIGKILL"));
  const url = `http://127.0.0.1:${port}`;
  for (let ready = false; !ready; await sleep(100))
    ready = await fetch(`${url}/readyz`).then(
      (response) => response.ok,
      () => false,
    );
  const token = await mintToken({ secret: SECRET, subject: "bench", scopes: ["counters:read"] });

  const keys = Array.from({ length: READ_KEYS }, (_, i) => keyOf(1 + Math.floor((i * ROWS) / READ_KEYS)));
  const headers = { authorization: `Bearer ${token}` };
  const body = JSON.stringify({ keys });
  // The same load generator for both, in the same run: the figure that counts is their ratio.
  const many = await requestsPerSecond(() => fetch(`${url}/read`, { method: "POST", headers, body }));
  const single = await requestsPerSecond((i) =>
    fetch(`${url}/counters/${encodeURIComponent(keys[i % keys.length] ?? "")}`, { headers }),
  );

  const latencies: number[] = [];
  for (let page = 0; page < PAGES; page++) {
    // A random place in the table: a prefix of six digits names 100 keys, and the cursor starts half way.
    const at = 1 + Math.floor(Math.random() * (ROWS - PAGE_SIZE));
    const prefix = keyOf(at).slice(0, 12);
    const started = performance.now();
    const response = await fetch(`${url}/counters?prefix=${prefix}&limit=${PAGE_SIZE}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    await response.arrayBuffer();
    if (!response.ok) throw new Error(`GET /counters answered ${response.status}`);
    latencies.push(performance.now() - started);
  }
  latencies.sort((a, b) => a - b);
  const quantile = (q: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;

  log(
    `\n## Reads (${availableParallelism()} cores, ${process.version}, ${ROWS} counters, one API process)\n`,
  );
  log("| measure | figure |");
  log("| --- | --- |");
  log(
    `| POST /read of ${READ_KEYS} keys, ${CONNECTIONS} requests at a time | ${many.toFixed(1)} requests/s = ${(many * READ_KEYS).toFixed(0)} counters/s |`,
  );
  log(
    `| GET /counters/{key} of the same keys, ${CONNECTIONS} at a time | ${single.toFixed(0)} counters/s: POST /read reads ${((many * READ_KEYS) / single).toFixed(1)}× as many |`,
  );
  log(
    `| GET /counters?prefix=…&limit=${PAGE_SIZE}, ${PAGES} pages one at a time | p50 ${quantile(0.5).toFixed(1)} ms, p95 ${quantile(0.95).toFixed(1)} ms, p99 ${quantile(0.99).toFixed(1)} ms |`,
  );
} finally {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
}

/** 2xx answers per second over `CONNECTIONS` concurrent request loops, for `DURATION_S`, after a warm-up. */
async function requestsPerSecond(request: (i: number) => Promise<Response>): Promise<number> {
  const loops = async (seconds: number) => {
    const until = performance.now() + seconds * 1000;
    let answered = 0;
    await Promise.all(
      Array.from({ length: CONNECTIONS }, async (_, loop) => {
        for (let i = loop; performance.now() < until; i += CONNECTIONS) {
          const response = await request(i);
          await response.arrayBuffer();
          if (!response.ok) throw new Error(`${response.url} answered ${response.status}`);
          answered++;
        }
      }),
    );
    return answered / seconds;
  };
  await loops(2);
  return loops(DURATION_S);
}
