import type { Context } from "hono";
import type { AppEnv } from "../context.ts";
import type { ProblemCode } from "../errors.ts";
import { requestHeader } from "../request-headers.ts";
import { respond } from "../respond.ts";
import { idempotencyKeySchema } from "../schemas.ts";
import type { IdempotencyKey } from "../store/increments.ts";
import type { WriteOutcome } from "../store/write-outcome.ts";
import { writeProblem } from "../store-problems.ts";
import { parseOrThrow } from "../validation.ts";

/** What POST /increment and POST /increments share: the problems a write can answer, retries, their docs. */
export const WRITE_PROBLEMS: readonly ProblemCode[] = [
  "invalid_body",
  "invalid_idempotency_key",
  "namespace_forbidden",
  "counter_out_of_range",
  "idempotency_key_reused",
  "idempotency_capacity",
  "redis_unavailable",
  "redis_full",
  "replication_unconfirmed",
  "internal_error",
];

/**
 * The documentation both writes share: the Idempotency-Key parameter, a JSON body of `schemaName` (whose
 * size limit `limit` states), and a 202 with an empty body.
 */
export function writeRequestDoc(schemaName: string, limit: string, accepted: string) {
  return {
    parameters: [{ $ref: "#/components/parameters/IdempotencyKey" }],
    requestBody: {
      description: `Read as JSON whatever the Content-Type says; at most ${limit}, else 413.`,
      required: true,
      content: { "application/json": { schema: { $ref: `#/components/schemas/${schemaName}` } } },
    },
    responses: {
      "202": { description: `Accepted: ${accepted} Empty body.`, headers: { "Idempotent-Replayed": false } },
    },
  };
}

/** The request's Idempotency-Key, per client; undefined without the header, a 400 when it is malformed. */
export function idempotencyKeyOf(c: Context<AppEnv>): IdempotencyKey | undefined {
  const header = requestHeader(c, "idempotency-key");
  if (header === undefined) return undefined;
  return {
    clientId: c.get("client").id,
    key: parseOrThrow(idempotencyKeySchema, header, "invalid_idempotency_key"),
  };
}

/** 202 once the store applied the write, or had already applied this very request; else its problem. */
export function answerWrite(
  c: Context<AppEnv>,
  outcome: WriteOutcome,
  endpoint: "increment" | "increments" | "reset",
): Response {
  if (outcome.kind !== "applied" && outcome.kind !== "replayed") throw writeProblem(outcome, endpoint);
  // Sent only now: Redis has acknowledged the write (or had already applied this very request).
  return respond(c, 202, null, outcome.kind === "replayed" ? { "Idempotent-Replayed": "true" } : undefined);
}
