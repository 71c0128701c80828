import type { Context } from "hono";
import type { AppEnv } from "../context.ts";
import type { ProblemCode } from "../errors.ts";
import { requestHeader } from "../request-headers.ts";
import { idempotencyKeySchema } from "../schemas.ts";
import type { IdempotencyKey } from "../store/increments.ts";
import { parseOrThrow } from "../validation.ts";

/** What POST /increment and POST /increments share: the problems a write can answer, and retries. */
export const WRITE_PROBLEMS: readonly ProblemCode[] = [
  "invalid_body",
  "invalid_idempotency_key",
  "counter_out_of_range",
  "idempotency_key_reused",
  "idempotency_capacity",
  "redis_unavailable",
  "redis_full",
  "replication_unconfirmed",
  "internal_error",
];

/** The request's Idempotency-Key, per client; undefined without the header, a 400 when it is malformed. */
export function idempotencyKeyOf(c: Context<AppEnv>): IdempotencyKey | undefined {
  const header = requestHeader(c, "idempotency-key");
  if (header === undefined) return undefined;
  return {
    clientId: c.get("client").id,
    key: parseOrThrow(idempotencyKeySchema, header, "invalid_idempotency_key"),
  };
}
