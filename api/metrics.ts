import type { MiddlewareHandler } from "hono";
import { Counter, Histogram, Registry } from "prom-client";
import type { AppEnv } from "./context.ts";
import { ApiError, type RedisErrorKind } from "./errors.ts";
import type { IncrementStore } from "./store/increments.ts";

// An increment answers in about a millisecond; a Redis command gives up after REDIS_COMMAND_TIMEOUT_MS (1 s).
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

// The `kind` label of tally_redis_errors_total: a Redis that cannot be reached and one that refused alike
// are "unavailable", as the metric has always said.
const REDIS_ERROR_LABELS: Record<RedisErrorKind, string> = {
  unreachable: "unavailable",
  refused: "unavailable",
  timeout: "timeout",
  disconnected: "disconnected",
  oom: "oom",
  noreplicas: "noreplicas",
  overflow: "overflow",
  unconfirmed: "unconfirmed",
};

// Any other method (a scanner's PROPFIND, a random token) would be a new series per spelling.
const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]);

/** The API's metrics, in a registry of their own (each API node has one; the tests make many nodes). */
export class ApiMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: "tally_http_requests_total",
    help: "HTTP requests answered, by route pattern, method and status",
    labelNames: ["route", "method", "status"] as const,
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: "tally_http_request_duration_seconds",
    help: "Time from the request reaching the app to its response, by route pattern and method",
    labelNames: ["route", "method"] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  readonly rejected = new Counter({
    name: "tally_rejected_requests_total",
    help: "Requests refused with a 4xx problem, by problem code",
    labelNames: ["code"] as const,
    registers: [this.registry],
  });
  readonly rateLimited = new Counter({
    name: "tally_rate_limited_total",
    help: "Requests refused with 429 because the client spent its quota",
    registers: [this.registry],
  });
  readonly redisErrors = new Counter({
    name: "tally_redis_errors_total",
    help: "Requests failed by Redis: unavailable (not connected, or refused by Redis: a slot moving, a cluster down), timeout (no answer within REDIS_COMMAND_TIMEOUT_MS), disconnected (the connection broke with the command in flight), overflow (the pending total would leave 64 bits), oom (Redis is at maxmemory and refused the write), noreplicas (the master lacks the replicas min-replicas-to-write asks for), unconfirmed (applied, but the replicas did not confirm it within REDIS_WAIT_TIMEOUT_MS)",
    labelNames: ["kind"] as const,
    registers: [this.registry],
  });
  readonly incrementsAccepted = new Counter({
    name: "tally_increments_accepted_total",
    help: "Increments Redis applied (a replayed Idempotency-Key is not counted again)",
    registers: [this.registry],
  });

  constructor() {
    // Present at 0 from the start, so an alert on their rate sees the first error.
    for (const kind of new Set(Object.values(REDIS_ERROR_LABELS))) this.redisErrors.inc({ kind }, 0);
  }
}

/**
 * Counts and times every request, labelled with the route pattern rather than the path: a path holds the
 * counter key, and a series per key would be unbounded. Must be the app's first middleware, so the time
 * includes everything else and every answer (errors and 404s too) is counted. With `perRequest` false
 * (HTTP_METRICS_DISABLED) only the count and duration of every request go; refusals and Redis errors are
 * still counted.
 */
export function httpMetrics(
  metrics: ApiMetrics,
  { perRequest }: { perRequest: boolean },
): MiddlewareHandler<AppEnv> {
  return async function recordHttpMetrics(c, next) {
    const began = perRequest ? performance.now() : 0;
    await next();
    const status = c.res.status;
    if (perRequest) {
      const route = c.get("route") ?? "unmatched";
      const method = METHODS.has(c.req.method) ? c.req.method : "other";
      metrics.duration.observe({ route, method }, (performance.now() - began) / 1000);
      metrics.requests.inc({ route, method, status: String(status) });
    }

    const problem = c.get("problem");
    if (problem === undefined) return;
    if (status < 500) metrics.rejected.inc({ code: problem });
    if (problem === "rate_limited") metrics.rateLimited.inc();
    if (c.error instanceof ApiError && c.error.redisError !== undefined) {
      metrics.redisErrors.inc({ kind: REDIS_ERROR_LABELS[c.error.redisError] });
    }
  };
}

/** Counts the increments the store applied, once a request's every increment is (replays not again). */
export function countAccepted(store: IncrementStore, metrics: ApiMetrics): IncrementStore {
  return async function countedIncrement(request) {
    const outcome = await store(request);
    if (outcome.kind === "applied") metrics.incrementsAccepted.inc(request.increments.length);
    return outcome;
  };
}
