import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { RedisFailure } from "../lib/redis/errors.ts";

/** Every response header the API documents (api/openapi/document.ts describes each). */
export type ResponseHeaderName =
  | "X-Request-Id"
  | "RateLimit"
  | "RateLimit-Policy"
  | "Retry-After"
  | "WWW-Authenticate"
  | "Allow"
  | "Idempotent-Replayed"
  | "Cache-Control";

/** A 503 the client should retry, after the Retry-After it is sent with. */
const tryLater = <Title extends string>(title: Title) =>
  ({ status: 503, title, headers: ["Retry-After"] }) as const;

/**
 * Every error the API can answer with, its status, and the headers it is always sent with. The map is
 * exhaustive by construction: a new code without a status or a title does not compile.
 * api/openapi/document.ts documents every status, title and header from it.
 */
export const PROBLEMS = {
  invalid_body: { status: 400, title: "The request body is not valid" },
  invalid_key: { status: 400, title: "The counter key is not valid" },
  invalid_query: { status: 400, title: "A query parameter is not valid" },
  invalid_idempotency_key: { status: 400, title: "The Idempotency-Key header is not valid" },
  unauthorized: { status: 401, title: "A valid bearer token is required", headers: ["WWW-Authenticate"] },
  insufficient_scope: {
    status: 403,
    title: "The token lacks the scope this operation needs",
    headers: ["WWW-Authenticate"],
  },
  namespace_forbidden: { status: 403, title: "The token may not touch these counter keys" },
  not_found: { status: 404, title: "No such resource" },
  counter_not_found: { status: 404, title: "No such counter" },
  method_not_allowed: { status: 405, title: "Method not allowed", headers: ["Allow"] },
  payload_too_large: { status: 413, title: "The request body is too large" },
  counter_out_of_range: { status: 422, title: "The increment would take the counter out of range" },
  idempotency_key_reused: { status: 422, title: "The Idempotency-Key was used for a different request" },
  rate_limited: {
    status: 429,
    title: "Too many requests",
    headers: ["Retry-After", "RateLimit", "RateLimit-Policy"],
  },
  internal_error: { status: 500, title: "Internal error" },
  redis_unavailable: tryLater("The counter store cannot take the request right now"),
  redis_full: tryLater("The counter store is out of memory until the syncer frees it"),
  redis_eviction_policy: { status: 503, title: "Redis may evict accepted increments" },
  replication_unconfirmed: tryLater("The replicas did not confirm the write in time: its outcome is unknown"),
  idempotency_capacity: tryLater("No room for another Idempotency-Key record"),
  counter_resharding: tryLater(
    "The counter's deltas are still moving to their shard after SYNC_SHARDS changed",
  ),
  auth_unavailable: tryLater("Tokens cannot be verified right now"),
  database_unavailable: tryLater("The database cannot answer right now"),
  shutting_down: { status: 503, title: "This node is shutting down" },
} as const satisfies Record<
  string,
  { status: ContentfulStatusCode; title: string; headers?: readonly ResponseHeaderName[] }
>;

export type ProblemCode = keyof typeof PROBLEMS;

export interface FieldError {
  /** JSON Pointer (RFC 6901) into the request body, e.g. "/value". */
  pointer: string;
  detail: string;
}

/**
 * What Redis did to a request answered with a problem, for tally_redis_errors_total: a failure, a pending
 * total that would overflow, or replicas that did not confirm.
 */
export type RedisErrorKind = RedisFailure | "overflow" | "unconfirmed";

export interface ApiErrorOptions {
  headers?: Record<string, string>;
  errors?: FieldError[];
  cause?: unknown;
  redisError?: RedisErrorKind;
}

/** Thrown anywhere in a request; the app's error handler turns it into an RFC 9457 problem response. */
export class ApiError extends Error {
  override name = "ApiError";
  readonly code: ProblemCode;
  readonly headers: Record<string, string>;
  readonly errors: FieldError[] | undefined;
  readonly redisError: RedisErrorKind | undefined;

  constructor(code: ProblemCode, detail: string, options: ApiErrorOptions = {}) {
    super(detail, { cause: options.cause });
    this.code = code;
    this.headers = options.headers ?? {};
    this.errors = options.errors;
    this.redisError = options.redisError;
  }

  get status(): ContentfulStatusCode {
    return PROBLEMS[this.code].status;
  }
}
