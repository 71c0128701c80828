import { loadConfigOrExit } from "../lib/config.ts";
import { createLogger } from "../lib/logger.ts";
import {
  reportToClusterPrimary,
  scrapeClusterWorkers,
  scrapeRegistry,
  startMetricsServer,
} from "../lib/metrics.ts";
import { logProcessStats } from "../lib/process-stats.ts";
import { Shutdown } from "../lib/shutdown.ts";
import { startApi } from "./server.ts";
import { forkApiWorkers, isApiWorker, listenForPrimaryShutdown } from "./workers.ts";

// One API node, as production runs it: `npm run start:api`, in API_WORKERS processes sharing the port.
const config = loadConfigOrExit();
const logger = createLogger({ level: config.logLevel, role: "api" });
const shutdown = new Shutdown(logger, config.http.shutdownTimeoutMs);
shutdown.listen();
shutdown.add("process stats", logProcessStats(logger, config.statsLogIntervalMs));
// One metrics port per node, whatever API_WORKERS is: with workers, the primary serves their sum.
const metricsServer = { host: config.http.host, port: config.metrics.port, logger, shutdown };
if (config.http.workers > 1 && !isApiWorker()) {
  forkApiWorkers(config.http.workers, logger, shutdown);
  await startMetricsServer({ ...metricsServer, scrape: scrapeClusterWorkers() });
} else {
  listenForPrimaryShutdown(shutdown);
  const api = await startApi(config, logger, shutdown);
  if (isApiWorker()) reportToClusterPrimary(api.metrics);
  else await startMetricsServer({ ...metricsServer, scrape: scrapeRegistry(api.metrics) });
}
