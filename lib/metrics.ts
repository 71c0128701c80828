import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { AggregatorRegistry, collectDefaultMetrics, prometheusContentType, type Registry } from "prom-client";
import { listen } from "./listen.ts";
import type { Logger } from "./logger.ts";
import type { Shutdown } from "./shutdown.ts";

/** Every metric name tally exports starts with it, Node's default process metrics included. */
export const METRIC_PREFIX = "tally_";

/** Adds Node's process metrics (CPU, memory, event-loop lag, GC, handles) to `registry`. */
export function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry, prefix: METRIC_PREFIX });
}

/** Produces the Prometheus text exposition. */
export type Scrape = () => Promise<string>;

export function scrapeRegistry(registry: Registry): Scrape {
  return () => registry.metrics();
}

/**
 * In a node:cluster primary: every worker's metrics, fetched over IPC and summed (prom-client's
 * AggregatorRegistry), so one API node is one scrape target whatever API_WORKERS is. Workers call
 * `reportToClusterPrimary`.
 */
export function scrapeClusterWorkers(): Scrape {
  const aggregator = new AggregatorRegistry();
  return () => aggregator.clusterMetrics();
}

/** In a node:cluster worker: answer the primary's metric requests with `registry`. */
export function reportToClusterPrimary(registry: Registry): void {
  // Constructing one is what installs the worker's IPC listener; the instance itself is not needed.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([registry]);
}

export interface Readiness {
  ready: boolean;
  /** Added to the JSON body, e.g. the staleness that made the process not ready. */
  detail?: Record<string, unknown>;
}

export interface MetricsServerOptions {
  host: string;
  /** 0 picks a free port; the log line and the result say which. */
  port: number;
  scrape: Scrape;
  logger: Logger;
  shutdown: Shutdown;
  /** Also serve GET /healthz (always 200) and GET /readyz (200 or 503 by `readiness`) on this port. */
  readiness?: () => Readiness;
}

export interface RunningMetricsServer {
  /** Where Prometheus scrapes, e.g. http://127.0.0.1:9464/metrics. */
  url: string;
}

/**
 * A bare node:http server for Prometheus on its own port, away from the API's port (nothing of the
 * client-facing app, its auth or its rate limits runs for a scrape), closed on shutdown.
 */
export async function startMetricsServer(options: MetricsServerOptions): Promise<RunningMetricsServer> {
  const { scrape, logger, readiness } = options;
  const server = createServer((request, response) => {
    const path = (request.url ?? "/").split("?", 1)[0];
    if (request.method !== "GET" && request.method !== "HEAD") {
      send(response, 405, "text/plain", "method not allowed\n", { Allow: "GET, HEAD" });
    } else if (path === "/metrics") {
      scrape().then(
        (text) => send(response, 200, prometheusContentType, text),
        (error: unknown) => {
          // E.g. a cluster worker that did not answer within prom-client's 5 s.
          logger.warn({ err: error }, "metrics scrape failed");
          send(response, 503, "text/plain", "metrics unavailable\n");
        },
      );
    } else if (readiness && path === "/healthz") {
      send(response, 200, "application/json", JSON.stringify({ status: "ok" }));
    } else if (readiness && path === "/readyz") {
      const state = readiness();
      const body = { status: state.ready ? "ready" : "not ready", ...state.detail };
      send(response, state.ready ? 200 : 503, "application/json", JSON.stringify(body));
    } else {
      send(response, 404, "text/plain", "not found\n");
    }
  });
  await listen(server, options.port, options.host, "METRICS_PORT");
  options.shutdown.add("metrics server", async () => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    // A scraper keeps its connection alive between scrapes; it must not hold the exit.
    server.closeAllConnections();
    await closed;
  });

  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}/metrics`;
  logger.info({ url }, "metrics listening");
  return { url };
}

function send(
  response: ServerResponse,
  status: number,
  contentType: string,
  body: string,
  headers: Record<string, string> = {},
): void {
  response.writeHead(status, { ...headers, "Content-Type": contentType, "Cache-Control": "no-store" });
  response.end(body);
}
