import { ApiError } from "../errors.ts";

/**
 * Every way a Redis command can fail maps to 503 except the ones the client caused. A command that timed
 * out may still have been applied: the client gets a 503 and cannot know, which is why retries should
 * carry an Idempotency-Key.
 */
export function redisFailure(error: unknown): ApiError {
  const kind = redisFailureKind(error);
  if (kind === "oom") {
    return new ApiError(
      "redis_full",
      "the counter store is out of memory and refused the write; it was not counted. The syncer frees memory every cycle",
      { headers: { "Retry-After": String(FULL_RETRY_AFTER_S) }, cause: error },
    );
  }
  if (kind === "overflow") {
    return new ApiError(
      "counter_out_of_range",
      "the pending total for this key would leave the 64-bit range",
      {
        cause: error,
      },
    );
  }
  return new ApiError("redis_unavailable", "the counter store did not take the write; it was not counted", {
    headers: { "Retry-After": "1" },
    cause: error,
  });
}

// A full Redis has room again once the syncer has moved a batch to Postgres: about one sync cycle.
export const FULL_RETRY_AFTER_S = 5;

export type RedisFailureKind = "overflow" | "oom" | "timeout" | "unavailable";

/** How a Redis command failed: the answer above, and the `kind` of tally_redis_errors_total. */
export function redisFailureKind(error: unknown): RedisFailureKind {
  if (!(error instanceof Error)) return "unavailable";
  // ioredis re-exports redis-errors' ReplyError without types, so match on its name.
  if (error.name === "ReplyError" && error.message.includes("would overflow")) return "overflow";
  // maxmemory reached under noeviction (or nothing left to evict): Redis refuses every write that grows it.
  if (error.name === "ReplyError" && error.message.startsWith("OOM ")) return "oom";
  // ioredis' commandTimeout rejects with a plain Error and this message.
  if (error.message === "Command timed out") return "timeout";
  return "unavailable";
}
