import { type RedisFailure, redisFailureOf } from "../lib/redis/errors.ts";
import { ApiError, type FieldError, type ProblemCode } from "./errors.ts";
import type { ReadFailure } from "./store/counter-readings.ts";
import type { FailedWrite } from "./store/write-outcome.ts";

/**
 * How the API answers what the store reports: a write that did not go through, and a Redis failure
 * anywhere (a write, the rate limiter, a read). The one table from store outcomes to problems.
 */

// A full Redis has room again once the syncer has moved a batch to Postgres: about one sync cycle.
export const FULL_RETRY_AFTER_S = 5;
// Records expire all the time, so room comes back soon: the syncer drops expired ones every cycle.
const CAPACITY_RETRY_AFTER_S = 5;

const OUT_OF_RANGE = "the pending total for this key would leave the 64-bit range";
const NOT_COUNTED = "the counter store did not take the write; it was not counted";
const UNKNOWN_OUTCOME =
  "the counter store did not answer: the write may or may not have been applied. Retry with the same Idempotency-Key, which applies it at most once";

/** Each Redis failure: its problem, what the client is told of its write, and when to try again. */
const REDIS_FAILURES: Record<RedisFailure, { code: ProblemCode; detail: string; retryAfterS: number }> = {
  oom: {
    code: "redis_full",
    detail:
      "the counter store is out of memory and refused the write; it was not counted. The syncer frees memory every cycle",
    retryAfterS: FULL_RETRY_AFTER_S,
  },
  noreplicas: {
    code: "redis_unavailable",
    detail:
      "the counter store refuses writes while its master has fewer replicas than min-replicas-to-write asks for; the write was not applied",
    retryAfterS: 1,
  },
  refused: { code: "redis_unavailable", detail: NOT_COUNTED, retryAfterS: 1 },
  unreachable: { code: "redis_unavailable", detail: NOT_COUNTED, retryAfterS: 1 },
  timeout: { code: "redis_unavailable", detail: UNKNOWN_OUTCOME, retryAfterS: 1 },
  disconnected: { code: "redis_unavailable", detail: UNKNOWN_OUTCOME, retryAfterS: 1 },
};

/** The answer to a Redis command that failed: `detail` replaces the default when given. */
export function redisProblem(failure: RedisFailure, cause: unknown, detail?: string): ApiError {
  const { code, retryAfterS } = REDIS_FAILURES[failure];
  return new ApiError(code, detail ?? REDIS_FAILURES[failure].detail, {
    headers: { "Retry-After": String(retryAfterS) },
    cause,
    redisError: failure,
  });
}

/**
 * The answer to a write that did not go through. `endpoint`: a POST /increment is one increment and its
 * problem names no position; a batch's names each refused increment.
 */
export function writeProblem(outcome: FailedWrite, endpoint: "increment" | "increments" | "reset"): ApiError {
  const partly = partlyApplied(outcome);
  const more = partly && `.${partly}`;
  switch (outcome.kind) {
    case "reused":
      return new ApiError(
        "idempotency_key_reused",
        `this Idempotency-Key was already used for a different request; use a new key for a new one${more}`,
      );
    case "full":
      return new ApiError(
        "idempotency_capacity",
        `the service holds as many Idempotency-Key records as IDEMPOTENCY_MAX_RECORDS allows; the write was not applied. Retry later, or send it without an Idempotency-Key${more}`,
        { headers: { "Retry-After": String(CAPACITY_RETRY_AFTER_S) } },
      );
    case "unconfirmed":
      return new ApiError(
        "replication_unconfirmed",
        `Redis applied the write but its replicas did not confirm holding it within REDIS_WAIT_TIMEOUT_MS, so a failover could still undo it: it may or may not count. Retry with the same Idempotency-Key, which applies it at most once${more}`,
        { headers: { "Retry-After": "1" }, redisError: "unconfirmed" },
      );
    case "failed": {
      const { partly: counts } = outcome;
      // Nothing applied: the failure's own wording holds; else say what was.
      const detail =
        counts === undefined
          ? undefined
          : `the counter store did not take ${counts.total - counts.applied} of the ${counts.total} increments;${partly}`;
      return redisProblem(outcome.failure, outcome.cause, detail);
    }
    case "overflow": {
      if (endpoint !== "increments") {
        return new ApiError("counter_out_of_range", OUT_OF_RANGE, { redisError: "overflow" });
      }
      const errors: FieldError[] = outcome.positions.map((index) => ({
        pointer: `/increments/${index}/value`,
        detail: OUT_OF_RANGE,
      }));
      return new ApiError(
        "counter_out_of_range",
        `${errors.length} increment(s) refused: ${OUT_OF_RANGE}.${partly}`,
        { errors, redisError: "overflow" },
      );
    }
  }
}

/** The answer to a read that a store could not serve; nothing was changed either way. */
export function readProblem(failure: ReadFailure): ApiError {
  if (failure.store === "postgres") {
    return new ApiError("database_unavailable", "the persisted total cannot be read right now", {
      headers: { "Retry-After": "1" },
      cause: failure.cause,
    });
  }
  return redisProblem(
    redisFailureOf(failure.cause),
    failure.cause,
    "the pending total cannot be read right now",
  );
}

/** " 3 of the 16 increments were applied (other shards). <how to retry>." or "" when none was. */
function partlyApplied({ partly, idempotent }: FailedWrite): string {
  if (partly === undefined) return "";
  const retry = idempotent
    ? "Retry with the same Idempotency-Key: parts already applied are not applied again"
    : "A retry would count those again; send batches with an Idempotency-Key to retry them safely";
  return ` ${partly.applied} of the ${partly.total} increments were applied (other shards). ${retry}.`;
}
