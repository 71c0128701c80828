import { startApiNode, startApiWorker } from "../api/node.ts";
import { isApiWorker } from "../api/workers.ts";
import { loadConfigOrExit } from "../lib/config.ts";
import { createLogger } from "../lib/logger.ts";
import { migrate } from "../lib/postgres/migrate.ts";
import { createPool, ensureDatabase } from "../lib/postgres/pool.ts";
import { logProcessStats } from "../lib/process-stats.ts";
import { Shutdown } from "../lib/shutdown.ts";
import { serveSyncerMetrics } from "../syncer/metrics.ts";
import { startSyncer, syncerShutdownTimeoutMs } from "../syncer/server.ts";

// `npm start`: the whole service for local use: migrations and a syncer in this process, and the API in
// API_WORKERS processes sharing the port (or here too, with API_WORKERS=1).
// Production runs the roles separately: `npm run start:api` (N) and `npm run start:syncer` (2+).
const config = loadConfigOrExit();
const apiLogger = createLogger({ level: config.logLevel, role: "api" });
// The primary's own lines (migrations, process stats, shutdown) are the "main" role's; its API workers'
// lines, shutdown included, are the API's.
const logger = isApiWorker() ? apiLogger : createLogger({ level: config.logLevel, role: "main" });
const shutdown = new Shutdown(logger, syncerShutdownTimeoutMs(config));
shutdown.listen();
shutdown.add("process stats", logProcessStats(logger, config.statsLogIntervalMs));

if (isApiWorker()) await startApiWorker(config, apiLogger, shutdown);
else await startPrimary();

async function startPrimary(): Promise<void> {
  await ensureDatabase(config.database.url);
  const pool = createPool({
    connectionString: config.database.url,
    applicationName: "tally-migrate",
    max: 1,
  });
  try {
    await migrate(pool);
  } finally {
    await pool.end();
  }
  // Two roles, so two metrics servers. METRICS_PORT, when set, is the API's and the next port the syncer's;
  // unset, both take free ports (one fixed default cannot serve two), printed below.
  const { host } = config.http;
  const { port, portSet } = config.metrics;
  const syncerLogger = createLogger({ level: config.logLevel, role: "syncer" });
  // Registered first so it stops last: the API drains before the syncer's final flush.
  const running = await startSyncer(config, syncerLogger, shutdown);
  const syncerMetrics = await serveSyncerMetrics(running, {
    host,
    port: portSet && port !== 0 ? port + 1 : 0,
    logger: syncerLogger,
    shutdown,
  });
  const apiMetrics = await startApiNode(config, apiLogger, shutdown, portSet ? port : 0);
  process.stdout.write(
    `tally: metrics at ${apiMetrics.url} (api) and ${syncerMetrics.url} (syncer; /readyz there too)\n`,
  );
}
