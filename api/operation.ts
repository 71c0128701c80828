import type { JsonSchema } from "@valibot/to-json-schema";
import type { Context } from "hono";
import type { AppEnv, Scope } from "./context.ts";
import type { ProblemCode, ResponseHeaderName } from "./errors.ts";

/**
 * One operation of the HTTP API, declared in one file (api/operations/): what it answers to, who may call
 * it, what it reads, every problem its handler can answer, its handler and its documentation. The app
 * registers authentication, rate limiting, the scope check, the body limit and the 405s from these
 * declarations (app.ts); the OpenAPI document renders them (openapi/document.ts); the metrics label is
 * the operation's route.
 */
export interface Operation {
  /** The OpenAPI operationId. */
  id: string;
  method: "GET" | "POST" | "DELETE";
  /** Hono's route pattern; a `:name{regex}` segment is the path parameter `name`. */
  path: string;
  /** The scope a bearer token must carry. Undefined: public, with neither a token nor a rate limit. */
  scope?: Scope;
  /** The operation reads a body of at most this many bytes: a larger declared one is a 413 before auth. */
  bodyLimitBytes?: number;
  /**
   * Every problem the handler itself can answer. What the app adds in front of it (auth, rate limit, body
   * limit) is added to the documented list from the declaration: see `problemsOf`.
   */
  problems: readonly ProblemCode[];
  /**
   * Always answers (or throws): the middleware in front of it return next()'s promise rather than awaiting
   * it, and hono takes what a chain returns for the response when nothing else finalized it.
   */
  handler: (c: Context<AppEnv>) => Response | Promise<Response>;
  doc: OperationDoc;
}

export interface OperationDoc {
  summary: string;
  description?: string;
  /** Parameters besides X-Request-Id, which every operation takes. */
  parameters: (ParameterObject | { $ref: string })[];
  requestBody?: { description: string; required: boolean; content: Record<string, { schema: JsonSchema }> };
  /** The success responses, by status; the headers every answer carries are added by the renderer. */
  responses: Record<string, SuccessResponse>;
  /** Schemas and parameters the operation refers to with $ref. */
  components?: { schemas?: Record<string, JsonSchema>; parameters?: Record<string, ParameterObject> };
}

export interface SuccessResponse {
  description: string;
  /** Headers this response carries besides the common ones, each required or not. */
  headers?: Partial<Record<ResponseHeaderName, boolean>>;
  content?: Record<string, { schema: JsonSchema }>;
}

export interface ParameterObject {
  name: string;
  in: "header" | "path" | "query";
  required: boolean;
  description: string;
  schema: JsonSchema;
}

// What the app puts in front of a scoped operation can answer: the token check, then the rate limiter
// (which writes to Redis, so it can find Redis down or full).
const BEHIND_AUTH: readonly ProblemCode[] = ["unauthorized", "insufficient_scope", "auth_unavailable"];
const BEHIND_RATE_LIMIT: readonly ProblemCode[] = ["rate_limited", "redis_unavailable", "redis_full"];

/** Every problem an operation can answer: its handler's, and those of the middleware its declaration adds. */
export function problemsOf(operation: Operation): ReadonlySet<ProblemCode> {
  return new Set([
    ...operation.problems,
    ...(operation.scope ? [...BEHIND_AUTH, ...BEHIND_RATE_LIMIT] : []),
    ...(operation.bodyLimitBytes === undefined ? [] : (["payload_too_large"] as const)),
  ]);
}

/** The operation's path as the metrics label: each parameter segment a `*`. */
export function routeLabel(path: string): string {
  return path.replace(/:[A-Za-z]\w*(\{[^}]*\})?/g, "*");
}

/** The operation's path in OpenAPI's template syntax. */
export function openApiPath(path: string): string {
  return path.replace(/:([A-Za-z]\w*)(\{[^}]*\})?/g, "{$1}");
}
