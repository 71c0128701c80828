import { ApiError } from "../errors.ts";

/**
 * Every way a Redis command can fail maps to 503 except the ones the client caused. Whether the write may
 * have been applied depends on how it failed: a write never sent, or refused by Redis, was not; one that got
 * no answer (a timeout, a connection lost with the write in flight) may have been, which is why retries
 * should carry an Idempotency-Key.
 */
export function redisFailure(error: unknown): ApiError {
  const kind = redisFailureKind(error);
  const options = { headers: { "Retry-After": "1" }, cause: error };
  switch (kind) {
    case "oom":
      return new ApiError(
        "redis_full",
        "the counter store is out of memory and refused the write; it was not counted. The syncer frees memory every cycle",
        { ...options, headers: { "Retry-After": String(FULL_RETRY_AFTER_S) } },
      );
    case "overflow":
      return new ApiError(
        "counter_out_of_range",
        "the pending total for this key would leave the 64-bit range",
        { cause: error },
      );
    case "noreplicas":
      return new ApiError(
        "redis_unavailable",
        "the counter store refuses writes while its master has fewer replicas than min-replicas-to-write asks for; the write was not applied",
        options,
      );
    case "timeout":
    case "disconnected":
      return new ApiError(
        "redis_unavailable",
        "the counter store did not answer: the write may or may not have been applied. Retry with the same Idempotency-Key, which applies it at most once",
        options,
      );
    case "unavailable":
      return new ApiError(
        "redis_unavailable",
        "the counter store did not take the write; it was not counted",
        options,
      );
  }
}

// A full Redis has room again once the syncer has moved a batch to Postgres: about one sync cycle.
export const FULL_RETRY_AFTER_S = 5;

/**
 * How a Redis command failed, for the answer above and the `kind` of tally_redis_errors_total:
 * - overflow: the pending total would leave 64 bits (the client's doing);
 * - oom: Redis is at maxmemory and refused the write;
 * - noreplicas: the master lacks the replicas min-replicas-to-write asks for, and refused the write;
 * - timeout: no answer within REDIS_COMMAND_TIMEOUT_MS (it may still be applied);
 * - disconnected: the connection broke with the command in flight (it may have been applied);
 * - unavailable: not sent (no connection), or refused for another reason (a slot moving, a cluster down).
 */
export type RedisFailureKind = "overflow" | "oom" | "noreplicas" | "timeout" | "disconnected" | "unavailable";

export const REDIS_FAILURE_KINDS: readonly RedisFailureKind[] = [
  "unavailable",
  "timeout",
  "disconnected",
  "overflow",
  "oom",
  "noreplicas",
];

export function redisFailureKind(error: unknown): RedisFailureKind {
  if (!(error instanceof Error)) return "unavailable";
  // ioredis re-exports redis-errors' ReplyError without types, so match on its name.
  if (error.name === "ReplyError") {
    if (error.message.includes("would overflow")) return "overflow";
    // maxmemory reached under noeviction (or nothing left to evict): Redis refuses every write that grows it.
    if (error.message.startsWith("OOM ")) return "oom";
    if (error.message.startsWith("NOREPLICAS ")) return "noreplicas";
    return "unavailable";
  }
  // ioredis' commandTimeout rejects with a plain Error and this message.
  if (error.message === "Command timed out") return "timeout";
  // Commands in flight when a connection closes are rejected with this; one never sent gets another message.
  if (error.message === "Connection is closed.") return "disconnected";
  return "unavailable";
}
