import { type JsonSchema, type OverrideActionContext, toJsonSchema } from "@valibot/to-json-schema";
import * as v from "valibot";
import { MAX_KEY_BYTES } from "../lib/config.ts";
import { PROBLEMS, type ProblemCode } from "./errors.ts";
import type { Problem } from "./problem.ts";
import {
  bodyIsNotAnArray,
  counterKeySchema,
  counterReadingSchema,
  idempotencyKeySchema,
  incrementBodySchema,
  keyHasNoNul,
  keyIsWellFormed,
} from "./schemas.ts";

/**
 * The OpenAPI 3.1 document of the HTTP API, served at GET /openapi.json.
 *
 * Every schema of what a client sends (the increment body, the counter key, the Idempotency-Key header) is
 * converted from the very valibot schemas the routes validate with, with the same configuration, so the
 * document cannot promise a rule the API does not enforce or miss one it does. What valibot schemas do not
 * describe (paths, security, headers, which problem an operation can answer) is assembled here, from the
 * problem map in errors.ts where it can be; test/api/openapi.test.ts checks all of it against real answers.
 */

/** Bump with package.json's version (a test compares them): tells a reader which build they are reading. */
const DOCUMENT_VERSION = "0.1.0";

export interface OpenApiOptions {
  /** MAX_KEY_LENGTH: the limit the routes enforce, so the documented one is the same. */
  maxKeyLength: number;
  /** BODY_LIMIT_BYTES. */
  bodyLimitBytes: number;
}

interface HeaderObject {
  description: string;
  required: boolean;
  schema: JsonSchema;
}

interface ParameterObject {
  name: string;
  in: "header" | "path";
  required: boolean;
  description: string;
  schema: JsonSchema;
}

interface ResponseObject {
  description: string;
  headers: Record<string, HeaderObject>;
  content?: Record<string, { schema: JsonSchema }>;
}

interface OperationObject {
  operationId: OperationId;
  summary: string;
  description?: string;
  security: Record<string, string[]>[];
  parameters: (ParameterObject | { $ref: string })[];
  requestBody?: {
    description: string;
    required: boolean;
    content: Record<string, { schema: JsonSchema }>;
  };
  responses: Record<string, ResponseObject>;
}

export interface OpenApiDocument {
  openapi: "3.1.1";
  info: { title: string; version: string; description: string };
  paths: Record<string, Partial<Record<"get" | "post", OperationObject>>>;
  components: {
    schemas: Record<string, JsonSchema>;
    parameters: Record<string, ParameterObject>;
    securitySchemes: Record<string, Record<string, string>>;
  };
}

type OperationId = "increment" | "readCounter" | "liveness" | "readiness" | "openApiDocument";

/**
 * The operations each problem can come from. A Record over every code, so a code added to errors.ts does not
 * compile until the document says where it is answered. "unrouted": answered for requests no operation
 * takes (an unknown path, a known path with another method), so it belongs to no operation.
 */
const ANSWERED_BY: Record<ProblemCode, readonly OperationId[] | "unrouted"> = {
  invalid_body: ["increment"],
  invalid_key: ["readCounter"],
  invalid_idempotency_key: ["increment"],
  unauthorized: ["increment", "readCounter"],
  insufficient_scope: ["increment", "readCounter"],
  not_found: "unrouted",
  counter_not_found: ["readCounter"],
  method_not_allowed: "unrouted",
  payload_too_large: ["increment"],
  counter_out_of_range: ["increment"],
  idempotency_key_reused: ["increment"],
  rate_limited: ["increment", "readCounter"],
  internal_error: ["increment", "readCounter", "readiness"],
  redis_unavailable: ["increment", "readCounter", "readiness"],
  redis_full: ["increment", "readCounter", "readiness"],
  redis_eviction_policy: ["readiness"],
  idempotency_capacity: ["increment"],
  auth_unavailable: ["increment", "readCounter"],
  database_unavailable: ["readCounter"],
  shutting_down: ["readiness"],
};

/** Operations behind the rate limiter (api/app.ts): their answers carry the RateLimit fields. */
const RATE_LIMITED: ReadonlySet<OperationId> = new Set(["increment", "readCounter"]);

type ResponseHeaderName =
  | "X-Request-Id"
  | "RateLimit"
  | "RateLimit-Policy"
  | "Retry-After"
  | "WWW-Authenticate"
  | "Allow"
  | "Idempotent-Replayed"
  | "Cache-Control";

/** The headers a problem is always sent with (see the ApiError sites in api/middleware and api/store). */
const PROBLEM_HEADERS: Partial<Record<ProblemCode, readonly ResponseHeaderName[]>> = {
  unauthorized: ["WWW-Authenticate"],
  insufficient_scope: ["WWW-Authenticate"],
  method_not_allowed: ["Allow"],
  rate_limited: ["Retry-After", "RateLimit", "RateLimit-Policy"],
  redis_unavailable: ["Retry-After"],
  redis_full: ["Retry-After"],
  idempotency_capacity: ["Retry-After"],
  auth_unavailable: ["Retry-After"],
  database_unavailable: ["Retry-After"],
};

const RESPONSE_HEADERS: Record<ResponseHeaderName, { description: string; schema: JsonSchema }> = {
  "X-Request-Id": {
    description:
      "The request's id, also in a problem's requestId and in the logs: the client's own X-Request-Id when it was well-formed, else a fresh UUID.",
    schema: { type: "string", pattern: "^[A-Za-z0-9_=-]{1,255}$" },
  },
  RateLimit: {
    description:
      'The client\'s remaining quota and the seconds until it resets (draft-ietf-httpapi-ratelimit-headers), e.g. `"default";r=998;t=1`. Sent on every answer that went through the rate limiter.',
    schema: { type: "string", examples: ['"default";r=998;t=1'] },
  },
  "RateLimit-Policy": {
    description:
      'The quota: RATE_LIMIT_POINTS requests (q) per RATE_LIMIT_DURATION_S seconds (w) per client (the token\'s sub), e.g. `"default";q=1000;w=1`. Rejected requests count too.',
    schema: { type: "string", examples: ['"default";q=1000;w=1'] },
  },
  "Retry-After": {
    description:
      "Seconds to wait before retrying: until the quota resets (429); 1 while Redis or Postgres cannot answer, 5 while the JWKS endpoint cannot be fetched (503).",
    schema: { type: "integer", minimum: 1 },
  },
  "WWW-Authenticate": {
    description:
      'The RFC 6750 challenge: `Bearer realm="tally"`, with `error="invalid_token"` when a token was sent but refused, or `error="insufficient_scope", scope="…"` (403).',
    schema: { type: "string" },
  },
  Allow: { description: "The method the path takes.", schema: { type: "string" } },
  "Idempotent-Replayed": {
    description:
      "Present on a 202 that answers a retry: an earlier request with the same Idempotency-Key already applied this increment, and this one changed nothing.",
    schema: { type: "string", const: "true" },
  },
  "Cache-Control": { description: "The document changes only with a deploy.", schema: { type: "string" } },
};

function header(name: ResponseHeaderName, required: boolean): HeaderObject {
  return { ...RESPONSE_HEADERS[name], required };
}

/** X-Request-Id on every answer (the first middleware sets it), the RateLimit fields past the limiter. */
function commonHeaders(
  operation: OperationId,
  rateLimitFieldsRequired: boolean,
): Record<string, HeaderObject> {
  const headers: Record<string, HeaderObject> = { "X-Request-Id": header("X-Request-Id", true) };
  if (RATE_LIMITED.has(operation)) {
    headers.RateLimit = header("RateLimit", rateLimitFieldsRequired);
    headers["RateLimit-Policy"] = header("RateLimit-Policy", rateLimitFieldsRequired);
  }
  return headers;
}

/** One response per status the operation can fail with, listing its problem codes and their titles. */
function problemResponses(operation: OperationId): Record<string, ResponseObject> {
  const codesByStatus = new Map<number, ProblemCode[]>();
  for (const [code, operations] of Object.entries(ANSWERED_BY) as [
    ProblemCode,
    (typeof ANSWERED_BY)[ProblemCode],
  ][]) {
    if (operations === "unrouted" || !operations.includes(operation)) continue;
    const status = PROBLEMS[code].status;
    codesByStatus.set(status, [...(codesByStatus.get(status) ?? []), code]);
  }
  const responses: Record<string, ResponseObject> = {};
  for (const [status, codes] of [...codesByStatus].sort(([a], [b]) => a - b)) {
    // Only the limiter's own refusal is sure to have passed it; a 401 never reaches it.
    const headers = commonHeaders(operation, status === 429);
    const named = new Set(codes.flatMap((code) => PROBLEM_HEADERS[code] ?? []));
    for (const name of named) {
      // Required only when every problem of this status sends it (a 503 shutting_down has no Retry-After).
      headers[name] = header(
        name,
        codes.every((code) => PROBLEM_HEADERS[code]?.includes(name)),
      );
    }
    responses[String(status)] = {
      description: codes.map((code) => `\`${code}\`: ${PROBLEMS[code].title}.`).join(" "),
      headers,
      content: {
        "application/problem+json": {
          schema: {
            allOf: [
              { $ref: "#/components/schemas/Problem" },
              { type: "object", properties: { status: { const: status }, code: { enum: codes } } },
            ],
          },
        },
      },
    };
  }
  return responses;
}

/** An RFC 9457 problem as problemResponse() in errors.ts builds it. */
const problemSchema = v.object({
  type: v.pipe(v.string(), v.startsWith("urn:tally:problem:")),
  title: v.string(),
  status: v.pipe(v.number(), v.integer()),
  detail: v.string(),
  instance: v.pipe(v.string(), v.description("The request's path.")),
  code: v.pipe(
    v.picklist(Object.keys(PROBLEMS) as ProblemCode[]),
    v.description("Stable: branch on this, not on the title or detail."),
  ),
  requestId: v.pipe(v.string(), v.description("As in the X-Request-Id response header.")),
  errors: v.optional(
    v.pipe(
      v.array(
        v.object({
          pointer: v.pipe(v.string(), v.description("A JSON Pointer (RFC 6901) into the request body.")),
          detail: v.string(),
        }),
      ),
      v.description("For an invalid body: one entry per failing field."),
    ),
  ),
});

type MutuallyAssignable<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
// Does not compile once the Problem that errors.ts sends and the one documented here drift apart.
true satisfies MutuallyAssignable<v.InferOutput<typeof problemSchema>, Problem>;

// The key's checks are opaque functions to the converter: state each in JSON Schema. Patterns are written to
// mean the same with and without the regex `u` flag, since JSON Schema validators differ there.
const KEY_CHECKS = new Map<unknown, JsonSchema>([
  // The object schema it precedes says "type": "object", which no array is.
  [bodyIsNotAnArray, {}],
  [keyHasNoNul, { not: { pattern: "\\u0000" } }],
  // Every UTF-16 unit is outside the surrogate range or half of a proper pair.
  [keyIsWellFormed, { pattern: "^(?:[^\\ud800-\\udfff]|[\\ud800-\\udbff][\\udc00-\\udfff])*$" }],
]);

function stateInJsonSchema({ valibotAction, jsonSchema }: OverrideActionContext): JsonSchema | undefined {
  const stated = KEY_CHECKS.get(valibotAction);
  if (stated !== undefined) {
    // Two checks may want the same keyword (two patterns): the second goes under allOf.
    const clash = Object.keys(stated).some((keyword) => keyword in jsonSchema);
    return clash
      ? { ...jsonSchema, allOf: [...(jsonSchema.allOf ?? []), stated] }
      : { ...jsonSchema, ...stated };
  }
  // JSON Schema's maxLength counts characters as RFC 8259 defines them, i.e. code points (a surrogate pair
  // is one; JSON-Schema-Test-Suite's maxLength cases check exactly that), as valibot's maxCodePoints does.
  if (
    valibotAction.type === "max_code_points" &&
    "requirement" in valibotAction &&
    typeof valibotAction.requirement === "number"
  ) {
    return { ...jsonSchema, maxLength: valibotAction.requirement };
  }
  // JSON Schema counts characters, never bytes: say it in words (describeProperties may say more).
  if (
    valibotAction.type === "max_bytes" &&
    "requirement" in valibotAction &&
    typeof valibotAction.requirement === "number"
  ) {
    return { ...jsonSchema, description: `At most ${valibotAction.requirement} bytes in UTF-8.` };
  }
  // Anything else is the converter's: what it cannot state throws (errorMode stays "throw"), so a rule added
  // to a schema cannot silently go undocumented.
  return undefined;
}

/** A valibot schema as a JSON Schema in OpenAPI 3.1's dialect (2020-12). */
function jsonSchemaOf(schema: v.GenericSchema, description?: string): JsonSchema {
  const { $schema: _dialect, ...json } = toJsonSchema(schema, {
    target: "draft-2020-12",
    // A pipe of two schemas (the body: unknown, then the object) is documented by its last: what passes.
    typeMode: "output",
    overrideAction: stateInJsonSchema,
  });
  return description === undefined ? json : { ...json, description };
}

/** Adds descriptions to an object schema's properties (the routes' schemas carry no prose, on purpose). */
function describeProperties(schema: JsonSchema, descriptions: Record<string, string>): JsonSchema {
  const properties = { ...schema.properties };
  for (const [name, description] of Object.entries(descriptions)) {
    const property = properties[name];
    if (typeof property !== "object") throw new Error(`the schema has no property "${name}" to describe`);
    properties[name] = { ...property, description };
  }
  return { ...schema, properties };
}

export function buildOpenApiDocument(options: OpenApiOptions): OpenApiDocument {
  const { maxKeyLength, bodyLimitBytes } = options;
  const keyRules = `A non-empty string of at most ${maxKeyLength} characters (Unicode code points, MAX_KEY_LENGTH) and at most ${MAX_KEY_BYTES} bytes in UTF-8 (what a Postgres index entry holds), stored byte-exact. NUL and lone surrogates are rejected: Postgres text cannot hold the first, and neither store can hold the second as sent.`;
  const incrementBody = describeProperties(
    jsonSchemaOf(
      incrementBodySchema(maxKeyLength),
      "One increment. Any other field is rejected, so a typo such as vaule does not silently count nothing.",
    ),
    {
      key: keyRules,
      value:
        'A JSON integer within ±(2^53−1). Negative values decrement; 0 is accepted and changes nothing. 2.0 and 1e3 are integers; 1.5, "1" and true are not.',
    },
  );
  const statusBody = (status: string) => jsonSchemaOf(v.object({ status: v.literal(status) }));
  const requestIdParameter = { $ref: "#/components/parameters/RequestId" };

  return {
    openapi: "3.1.1",
    info: {
      title: "tally",
      version: DOCUMENT_VERSION,
      description: [
        "A counter service for very high write rates: POST /increment answers 202 once Redis holds the increment, and a syncer folds increments into Postgres within seconds.",
        "Every error is `application/problem+json` (RFC 9457) with a stable `code`. Each operation lists the codes it can answer; besides those, any request answers " +
          (Object.entries(ANSWERED_BY) as [ProblemCode, unknown][])
            .filter(([, operations]) => operations === "unrouted")
            .map(([code]) => `\`${code}\` (${PROBLEMS[code].status}, ${PROBLEMS[code].title})`)
            .join(" or ") +
          " when no operation takes it; a 405 names the allowed method in Allow.",
        "This document is generated from the schemas the API validates with, under this node's configuration.",
      ].join("\n\n"),
    },
    paths: {
      "/increment": {
        post: {
          operationId: "increment",
          summary: "Add value to the counter key",
          description:
            "Answers 202 only after Redis acknowledged the increment; no 202 is ever sent for a write Redis did not take. A rejected request stores nothing.",
          security: [{ bearerAuth: ["counters:write"] }],
          parameters: [{ $ref: "#/components/parameters/IdempotencyKey" }, requestIdParameter],
          requestBody: {
            description: `Read as JSON whatever the Content-Type says; at most ${bodyLimitBytes} bytes (BODY_LIMIT_BYTES), else 413.`,
            required: true,
            content: { "application/json": { schema: { $ref: "#/components/schemas/IncrementBody" } } },
          },
          responses: {
            "202": {
              description: "Accepted: Redis holds the increment. Empty body.",
              headers: {
                ...commonHeaders("increment", true),
                "Idempotent-Replayed": header("Idempotent-Replayed", false),
              },
            },
            ...problemResponses("increment"),
          },
        },
      },
      "/counters/{key}": {
        get: {
          operationId: "readCounter",
          summary: "Read a counter: persisted, pending and their total",
          description:
            "The reading never counts a delta twice or misses one while the syncer works. 404 counter_not_found when nothing was ever counted for the key.",
          security: [{ bearerAuth: ["counters:read"] }],
          parameters: [
            {
              name: "key",
              in: "path",
              required: true,
              description: `${keyRules} Percent-encoded; it may contain slashes. The keys . and .. cannot be read this way: URL parsing removes them from the path even when percent-encoded.`,
              schema: jsonSchemaOf(counterKeySchema(maxKeyLength)),
            },
            requestIdParameter,
          ],
          responses: {
            "200": {
              description: "The counter.",
              headers: commonHeaders("readCounter", true),
              content: { "application/json": { schema: { $ref: "#/components/schemas/CounterReading" } } },
            },
            ...problemResponses("readCounter"),
          },
        },
      },
      "/healthz": {
        get: {
          operationId: "liveness",
          summary: "The process is alive",
          security: [],
          parameters: [requestIdParameter],
          responses: {
            "200": {
              description: "Alive.",
              headers: commonHeaders("liveness", false),
              content: { "application/json": { schema: statusBody("ok") } },
            },
          },
        },
      },
      "/readyz": {
        get: {
          operationId: "readiness",
          summary: "The node can serve: Redis answers PING",
          description:
            "503 while Redis is unreachable and once shutdown has begun (with SHUTDOWN_DRAIN_DELAY_MS the node keeps serving that long, so a load balancer sees it leave before it stops listening).",
          security: [],
          parameters: [requestIdParameter],
          responses: {
            "200": {
              description: "Ready.",
              headers: commonHeaders("readiness", false),
              content: { "application/json": { schema: statusBody("ready") } },
            },
            ...problemResponses("readiness"),
          },
        },
      },
      "/openapi.json": {
        get: {
          operationId: "openApiDocument",
          summary: "This document",
          security: [],
          parameters: [requestIdParameter],
          responses: {
            "200": {
              description: "The OpenAPI 3.1 document.",
              headers: {
                ...commonHeaders("openApiDocument", false),
                "Cache-Control": header("Cache-Control", true),
              },
              content: { "application/json": { schema: { type: "object" } } },
            },
          },
        },
      },
    },
    components: {
      schemas: {
        IncrementBody: incrementBody,
        CounterReading: jsonSchemaOf(counterReadingSchema(maxKeyLength)),
        Problem: jsonSchemaOf(problemSchema),
      },
      parameters: {
        IdempotencyKey: {
          name: "Idempotency-Key",
          in: "header",
          required: false,
          description:
            "Makes a retry safe: a request with the same key from the same client (the token's sub) within IDEMPOTENCY_TTL_S (24 h by default) answers 202 with Idempotent-Replayed: true and is applied once; the same key with a different body is 422 idempotency_key_reused. Compared byte for byte; a UUID per logical increment is the usual choice.",
          schema: jsonSchemaOf(idempotencyKeySchema),
        },
        RequestId: {
          name: "X-Request-Id",
          in: "header",
          required: false,
          description: "Kept as the request's id when well-formed; otherwise the API makes one.",
          schema: RESPONSE_HEADERS["X-Request-Id"].schema,
        },
      },
      securitySchemes: {
        bearerAuth: {
          type: "http",
          scheme: "bearer",
          bearerFormat: "JWT",
          description:
            "A JWT signed with HS256 (JWT_SECRET) or RS256/ES256 (keys from JWT_JWKS_URL). exp and sub are required, iss/aud are checked when JWT_ISSUER/JWT_AUDIENCE are set. The space-separated scope claim must hold the scope an operation names: counters:write or counters:read. Rate limits are per sub. With AUTH_DISABLED=true no token is needed.",
        },
      },
    },
  };
}
