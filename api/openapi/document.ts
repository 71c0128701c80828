import type { JsonSchema } from "@valibot/to-json-schema";
import * as v from "valibot";
import { PROBLEMS, type ProblemCode, type ResponseHeaderName } from "../errors.ts";
import {
  type Operation,
  type OperationDoc,
  openApiPath,
  type ParameterObject,
  problemsOf,
} from "../operation.ts";
import type { Problem } from "../problem.ts";
import { jsonSchemaOf } from "./json-schema.ts";

/**
 * The OpenAPI 3.1 document of the HTTP API, rendered from the operations' declarations (api/operations/):
 * their paths, scopes and documentation, every problem each can answer (its own and those of the middleware
 * its declaration puts in front of it) and the headers each problem is sent with (api/errors.ts).
 * test/api/openapi.test.ts checks all of it against real answers.
 */

/** Bump with package.json's version (a test compares them): tells a reader which build they are reading. */
const DOCUMENT_VERSION = "0.1.0";

/** Problems answered for requests no operation takes: an unknown path, a known path with another method. */
const UNROUTED: readonly ProblemCode[] = ["not_found", "method_not_allowed"];

interface HeaderObject {
  description: string;
  required: boolean;
  schema: JsonSchema;
}

interface ResponseObject {
  description: string;
  headers: Record<string, HeaderObject>;
  content?: Record<string, { schema: JsonSchema }>;
}

interface OperationObject extends Omit<OperationDoc, "responses" | "components"> {
  operationId: string;
  security: Record<string, string[]>[];
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
function commonHeaders(operation: Operation, rateLimitFieldsRequired: boolean): Record<string, HeaderObject> {
  const headers: Record<string, HeaderObject> = { "X-Request-Id": header("X-Request-Id", true) };
  if (operation.scope) {
    headers.RateLimit = header("RateLimit", rateLimitFieldsRequired);
    headers["RateLimit-Policy"] = header("RateLimit-Policy", rateLimitFieldsRequired);
  }
  return headers;
}

function problemHeaders(code: ProblemCode): readonly ResponseHeaderName[] {
  const problem = PROBLEMS[code];
  return "headers" in problem ? problem.headers : [];
}

/** One response per status the operation can fail with, listing its problem codes and their titles. */
function problemResponses(operation: Operation): Record<string, ResponseObject> {
  const answered = problemsOf(operation);
  const codesByStatus = new Map<number, ProblemCode[]>();
  for (const code of Object.keys(PROBLEMS) as ProblemCode[]) {
    if (!answered.has(code)) continue;
    const status = PROBLEMS[code].status;
    codesByStatus.set(status, [...(codesByStatus.get(status) ?? []), code]);
  }
  const responses: Record<string, ResponseObject> = {};
  for (const [status, codes] of [...codesByStatus].sort(([a], [b]) => a - b)) {
    // Only the limiter's own refusal is sure to have passed it; a 401 never reaches it.
    const headers = commonHeaders(operation, status === 429);
    for (const name of new Set(codes.flatMap(problemHeaders))) {
      // Required only when every problem of this status sends it (a 503 shutting_down has no Retry-After).
      headers[name] = header(
        name,
        codes.every((code) => problemHeaders(code).includes(name)),
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

function operationObject(operation: Operation): OperationObject {
  const { doc } = operation;
  const responses: Record<string, ResponseObject> = {};
  for (const [status, response] of Object.entries(doc.responses)) {
    const headers = commonHeaders(operation, true);
    for (const [name, required] of Object.entries(response.headers ?? {}) as [
      ResponseHeaderName,
      boolean,
    ][]) {
      headers[name] = header(name, required);
    }
    responses[status] = {
      description: response.description,
      headers,
      ...(response.content ? { content: response.content } : {}),
    };
  }
  return {
    operationId: operation.id,
    summary: doc.summary,
    ...(doc.description === undefined ? {} : { description: doc.description }),
    security: operation.scope ? [{ bearerAuth: [operation.scope] }] : [],
    parameters: [...doc.parameters, { $ref: "#/components/parameters/RequestId" }],
    ...(doc.requestBody ? { requestBody: doc.requestBody } : {}),
    responses: { ...responses, ...problemResponses(operation) },
  };
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

/**
 * Renders the document. Every problem code must be answered somewhere: a code no operation declares (and no
 * request outside the operations gets) fails here, at start-up and in every test, until one does.
 */
export function buildOpenApiDocument(operations: readonly Operation[]): OpenApiDocument {
  const answered = new Set([...UNROUTED, ...operations.flatMap((operation) => [...problemsOf(operation)])]);
  const unanswered = (Object.keys(PROBLEMS) as ProblemCode[]).filter((code) => !answered.has(code));
  if (unanswered.length > 0) throw new Error(`no operation answers ${unanswered.join(", ")}`);

  const paths: OpenApiDocument["paths"] = {};
  const schemas: Record<string, JsonSchema> = {};
  const parameters: Record<string, ParameterObject> = {
    RequestId: {
      name: "X-Request-Id",
      in: "header",
      required: false,
      description: "Kept as the request's id when well-formed; otherwise the API makes one.",
      schema: RESPONSE_HEADERS["X-Request-Id"].schema,
    },
  };
  for (const operation of operations) {
    const path = openApiPath(operation.path);
    paths[path] = { ...paths[path], [operation.method.toLowerCase()]: operationObject(operation) };
    Object.assign(schemas, operation.doc.components?.schemas);
    Object.assign(parameters, operation.doc.components?.parameters);
  }
  schemas.Problem = jsonSchemaOf(problemSchema);

  return {
    openapi: "3.1.1",
    info: {
      title: "tally",
      version: DOCUMENT_VERSION,
      description: [
        "A counter service for very high write rates: POST /increment answers 202 once Redis holds the increment, and a syncer folds increments into Postgres within seconds.",
        "Every error is `application/problem+json` (RFC 9457) with a stable `code`. Each operation lists the codes it can answer; besides those, any request answers " +
          UNROUTED.map((code) => `\`${code}\` (${PROBLEMS[code].status}, ${PROBLEMS[code].title})`).join(
            " or ",
          ) +
          " when no operation takes it; a 405 names the allowed method in Allow.",
        "This document is generated from the schemas the API validates with, under this node's configuration.",
      ].join("\n\n"),
    },
    paths,
    components: {
      schemas,
      parameters,
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
