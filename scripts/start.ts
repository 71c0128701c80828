import path from "node:path";
import { startApiNode, startApiWorker } from "../api/node.ts";
import { isApiWorker } from "../api/workers.ts";
import { loadConfigOrExit } from "../lib/config.ts";
import { startOrExit } from "../lib/exit.ts";
import { createLogger } from "../lib/logger.ts";
import { prepareDatabase } from "../lib/postgres/prepare.ts";
import { logProcessStats } from "../lib/process-stats.ts";
import { warnIfRedisUnreachable } from "../lib/redis/connection.ts";
import { Shutdown } from "../lib/shutdown.ts";
import { serveSyncerMetrics } from "../syncer/metrics.ts";
import { startSyncer, syncerShutdownTimeoutMs } from "../syncer/process.ts";
import { startLocalStores } from "./local-stores.ts";

// `npm start`: the whole service for local use: migrations and a syncer in this process, and the API in
// API_WORKERS processes sharing the port (or here too, with API_WORKERS=1).
// Production runs the roles separately: `npm run start:api` (N) and `npm run start:syncer` (2+).
const config = loadConfigOrExit();
// Where a Postgres or Redis that npm start starts itself keeps its data (see local-stores.ts): the project's.
const LOCAL_DATA_DIR = ".tally";
const apiLogger = createLogger({ level: config.logLevel, role: "api" });
// The primary's own lines (migrations, process stats, shutdown) are the "main" role's; its API workers'
// lines, shutdown included, are the API's.
const logger = isApiWorker() ? apiLogger : createLogger({ level: config.logLevel, role: "main" });
const shutdown = new Shutdown(logger, syncerShutdownTimeoutMs(config));
shutdown.listen();
shutdown.add("process stats", logProcessStats(logger, config.statsLogIntervalMs));

await startOrExit(logger, () =>
  isApiWorker() ? startApiWorker(config, apiLogger, shutdown) : startPrimary(),
);

async function startPrimary(): Promise<void> {
  const migrateLogger = createLogger({ level: config.logLevel, role: "migrate" });
  // Registered first, so stopped last: everything else drains into them.
  await startLocalStores({
    env: process.env,
    config,
    dataDir: path.resolve(LOCAL_DATA_DIR),
    logger,
    shutdown,
  });
  await warnIfRedisUnreachable(config, logger);
  const applied = await prepareDatabase(config.database.url, {
    logger: migrateLogger,
    waitMs: config.database.waitMs,
  });
  migrateLogger.info({ applied }, applied.length ? "migrations applied" : "schema up to date");
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
