import type { Config } from "../lib/config.ts";
import type { Logger } from "../lib/logger.ts";
import {
  type RunningMetricsServer,
  reportToClusterPrimary,
  type Scrape,
  scrapeClusterWorkers,
  scrapeRegistry,
  startMetricsServer,
} from "../lib/metrics.ts";
import type { Shutdown } from "../lib/shutdown.ts";
import { startApiInstance } from "./instance.ts";
import { forkApiWorkers, listenForPrimaryShutdown } from "./workers.ts";

/**
 * Starts one API node with its metrics server on `metricsPort`: the API itself in this process, or, with
 * API_WORKERS > 1, in that many workers forked from it, whose metrics this process then serves summed, so a
 * node is one scrape target whatever its worker count. The workers' entry point calls `startApiWorker`.
 */
export async function startApiNode(
  config: Config,
  logger: Logger,
  shutdown: Shutdown,
  metricsPort: number,
): Promise<RunningMetricsServer> {
  const serveMetrics = (scrape: Scrape) =>
    startMetricsServer({ host: config.http.host, port: metricsPort, scrape, logger, shutdown });
  if (config.http.workers === 1)
    return serveMetrics(scrapeRegistry((await startApiInstance(config, logger, shutdown)).metrics));
  // The port first: a node that cannot serve its metrics stops before it has any worker to stop.
  const metrics = await serveMetrics(scrapeClusterWorkers());
  forkApiWorkers(config.http.workers, logger, shutdown);
  return metrics;
}

/** In an API worker: serve, drain when the primary asks, and hand the metrics to the primary. */
export async function startApiWorker(config: Config, logger: Logger, shutdown: Shutdown): Promise<void> {
  listenForPrimaryShutdown(shutdown);
  const api = await startApiInstance(config, logger, shutdown);
  reportToClusterPrimary(api.metrics);
}
