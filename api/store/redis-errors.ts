import { ApiError } from "../errors.ts";

/**
 * Every way a Redis command can fail maps to 503 except the ones the client caused. A command that timed
 * out may still have been applied: the client gets a 503 and cannot know, which is why retries should
 * carry an Idempotency-Key.
 */
export function redisFailure(error: unknown): ApiError {
  // ioredis re-exports redis-errors' ReplyError without types, so match on its name.
  if (error instanceof Error && error.name === "ReplyError" && error.message.includes("would overflow")) {
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
