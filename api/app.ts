import { Hono, type MiddlewareHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import type { Logger } from "../lib/logger.ts";
import { declaredLength, payloadTooLarge } from "./body.ts";
import type { AppEnv } from "./context.ts";
import { ApiError, type ProblemCode } from "./errors.ts";
import { type ApiMetrics, countAccepted, httpMetrics } from "./metrics.ts";
import { authenticate, requireScope } from "./middleware/auth/index.ts";
import type { TokenVerifier } from "./middleware/auth/verifier.ts";
import type { PointSpender } from "./middleware/rate-limit/coalesce.ts";
import { noRateLimit, rateLimit } from "./middleware/rate-limit/index.ts";
import { requestId } from "./middleware/request-id/index.ts";
import { buildOpenApiDocument } from "./openapi/document.ts";
import { type Operation, routeLabel } from "./operation.ts";
import { type HealthOptions, livenessOperation, readinessOperation } from "./operations/health.ts";
import { incrementOperation } from "./operations/increment.ts";
import { incrementsOperation } from "./operations/increments.ts";
import { listCountersOperation } from "./operations/list-counters.ts";
import { openApiDocumentOperation } from "./operations/openapi-document.ts";
import { readCounterOperation } from "./operations/read-counter.ts";
import { readCountersOperation } from "./operations/read-counters.ts";
import { resetCounterOperation } from "./operations/reset-counter.ts";
import { problemResponse } from "./problem.ts";
import type { CounterLister } from "./store/counter-listing.ts";
import type { CounterReader } from "./store/counter-readings.ts";
import type { IncrementStore } from "./store/increments.ts";
import type { CounterResetter } from "./store/resets.ts";

export interface AppDependencies {
  logger: Logger;
  metrics: ApiMetrics;
  /** Count and time every request (tally_http_*); off with HTTP_METRICS_DISABLED. */
  httpMetrics: boolean;
  verifier: TokenVerifier | null;
  /** Null with RATE_LIMIT_DISABLED. */
  rateLimiter: PointSpender | null;
  increment: IncrementStore;
  readCounter: CounterReader;
  listCounters: CounterLister;
  resetCounter: CounterResetter;
  health: HealthOptions;
  maxKeyLength: number;
  bodyLimitBytes: number;
  maxBatchSize: number;
}

/** Every operation of the API, in the order the OpenAPI document lists them. Adding one is adding it here. */
export function apiOperations(deps: AppDependencies): Operation[] {
  const { maxKeyLength, bodyLimitBytes } = deps;
  // Rendered once, from every operation (this list's last one serves it): the configuration does not
  // change while a node runs.
  let document = "";
  const increment = countAccepted(deps.increment, deps.metrics);
  const operations = [
    incrementOperation({ increment, maxKeyLength, bodyLimitBytes }),
    incrementsOperation({ increment, maxKeyLength, maxBatchSize: deps.maxBatchSize }),
    readCounterOperation({ readCounter: deps.readCounter, maxKeyLength }),
    readCountersOperation({ readCounter: deps.readCounter, maxKeyLength }),
    listCountersOperation({ listCounters: deps.listCounters, maxKeyLength }),
    resetCounterOperation({ resetCounter: deps.resetCounter, maxKeyLength }),
    livenessOperation(),
    readinessOperation(deps.health),
    openApiDocumentOperation(() => document),
  ];
  document = JSON.stringify(buildOpenApiDocument(operations));
  return operations;
}

/** The whole HTTP API, with no network attached: tests drive it through `app.request()`. */
export function newApp(deps: AppDependencies) {
  const app = new Hono<AppEnv>();
  app.use(httpMetrics(deps.metrics, { perRequest: deps.httpMetrics }));
  app.use(requestId(deps.logger));
  app.onError((error, c) => {
    const problem = toApiError(error, c.get("logger"), () => c.req.raw.signal.aborted);
    // Readiness turns at once, not at the next reading of Redis' memory.
    if (problem.code === "redis_full") deps.health.redisMemory.noteOutOfMemory();
    return problemResponse(c, problem);
  });
  app.notFound((c) =>
    problemResponse(c, new ApiError("not_found", `no route for ${c.req.method} ${c.req.path}`)),
  );

  const authenticateClient = authenticate({ verifier: deps.verifier });
  const limitClient = deps.rateLimiter ? rateLimit({ limiter: deps.rateLimiter }) : noRateLimit();
  const methodsByPath = new Map<string, string[]>();
  for (const operation of apiOperations(deps)) {
    // In the order a request meets them: a body declared too large is refused before the token is even
    // looked at (the operation enforces the limit on the bytes it reads: a chunked body declares nothing),
    // then the token, the client's quota, the token's scope.
    const chain: MiddlewareHandler<AppEnv>[] = [labelRoute(operation.path)];
    if (operation.bodyLimitBytes !== undefined) chain.push(limitDeclaredBody(operation.bodyLimitBytes));
    if (operation.scope) chain.push(authenticateClient, limitClient, requireScope(operation.scope));
    app.on(operation.method, [operation.path], ...chain, operation.handler);
    methodsByPath.set(operation.path, [...(methodsByPath.get(operation.path) ?? []), operation.method]);
  }
  // A known path with the wrong method is a 405 that names the allowed ones, not a 404.
  for (const [path, methods] of methodsByPath) {
    app.all(path, labelRoute(path), methodNotAllowed(methods.join(", ")));
  }
  return app;
}

/** Names the request's operation for the metrics (api/metrics.ts): its path with parameters as `*`. */
function labelRoute(path: string): MiddlewareHandler<AppEnv> {
  const route = routeLabel(path);
  // Not async, like every layer that works only before `next()` (the body limit, the scope check, the
  // anonymous client, the disabled quota): returning next()'s promise spares a promise and a microtask per
  // layer and request.
  return function setRouteLabel(c, next) {
    c.set("route", route);
    return next();
  };
}

function limitDeclaredBody(maxBytes: number): MiddlewareHandler<AppEnv> {
  return function limitDeclaredBody(c, next) {
    if ((declaredLength(c) ?? 0) > maxBytes) throw payloadTooLarge(maxBytes);
    return next();
  };
}

function methodNotAllowed(allow: string): MiddlewareHandler<AppEnv> {
  return async function wrongMethod(c) {
    throw new ApiError("method_not_allowed", `${c.req.method} is not allowed here`, {
      headers: { Allow: allow },
    });
  };
}

const STORE_CONDITIONS: ReadonlySet<ProblemCode> = new Set([
  "redis_unavailable",
  "redis_full",
  "replication_unconfirmed",
]);

function describeCause(error: ApiError): string {
  return error.cause instanceof Error ? error.cause.message : error.message;
}

/** `logger` is the request's (c.var.logger): its lines carry the request id. */
function toApiError(error: Error, logger: Logger, clientGone: () => boolean): ApiError {
  if (error instanceof ApiError) {
    if (STORE_CONDITIONS.has(error.code)) {
      // Redis down, full or without its replicas fails every request alike: its watchers say so once
      // (lib/redis/connection.ts, memory-watch.ts, acknowledgements.ts) and tally_redis_errors_total counts
      // them; a line per request would be a flood.
      logger.debug({ code: error.code, reason: describeCause(error) }, error.message);
    } else if (error.status >= 500) {
      logger.warn({ err: error.cause ?? error, code: error.code }, error.message);
    }
    return error;
  }
  // Hono raises HTTPException for malformed requests it detects itself (e.g. a body that cannot be read).
  if (error instanceof HTTPException && error.status < 500) {
    return new ApiError("invalid_body", error.message || "the request could not be read");
  }
  // The client closed the connection mid-request (the body stream then fails with "aborted"): its doing, not
  // a 500, and not worth an error line per hang-up; nobody will read this answer anyway.
  if (clientGone()) {
    logger.info({ err: error }, "client closed the connection before the request was complete");
    return new ApiError("invalid_body", "the connection closed before the request was complete", {
      cause: error,
    });
  }
  logger.error({ err: error }, "unhandled error");
  return new ApiError("internal_error", "an unexpected error occurred; it has been logged", { cause: error });
}
