/**
 * How a Redis command failed, as far as tally acts on it: the one place that tells Redis' and ioredis'
 * errors apart. A reply error is told by its code (the first word Redis puts in it, as the protocol has
 * it); ioredis' own errors by their name, or, for the two it raises as plain Errors, by their fixed message.
 *
 * - oom: Redis is at maxmemory and refused a write (noeviction).
 * - noreplicas: the master lacks the replicas min-replicas-to-write asks for, and refused a write.
 * - refused: Redis answered with another error (a slot moving, a cluster down, a demoted master, loading).
 * - timeout: no answer within the command timeout; the command may still be applied.
 * - disconnected: the connection broke with the command in flight; it may have been applied.
 * - unreachable: the command was not sent, for there was no connection (or no master for its slot).
 */
export type RedisFailure = "oom" | "noreplicas" | "refused" | "timeout" | "disconnected" | "unreachable";

export const REDIS_FAILURES: readonly RedisFailure[] = [
  "oom",
  "noreplicas",
  "refused",
  "timeout",
  "disconnected",
  "unreachable",
];

// ioredis raises these as plain Errors, told apart only by their text.
const TIMED_OUT = "Command timed out";
const CLOSED_IN_FLIGHT = "Connection is closed.";
const NOT_SENT = "Stream isn't writeable and enableOfflineQueue options is false";
// ioredis' errors that mean no connection could take the command.
const UNREACHABLE_NAMES = new Set(["MaxRetriesPerRequestError", "ClusterAllFailedError", "SlotMapError"]);
// Reply codes after which a Cluster client's slot map may be out of date.
const SLOT_MAP_CODES = new Set(["MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN"]);

/** The code of an error Redis answered with (OOM, NOREPLICAS, MOVED, ERR, …); undefined for any other. */
export function replyCode(error: unknown): string | undefined {
  // ioredis re-exports redis-errors' ReplyError without types, so it is told by its name.
  if (!(error instanceof Error) || error.name !== "ReplyError") return undefined;
  return error.message.split(" ", 1)[0];
}

export function redisFailureOf(error: unknown): RedisFailure {
  const code = replyCode(error);
  if (code !== undefined) return failureOfCode(code);
  if (!(error instanceof Error)) return "unreachable";
  if (error.message === TIMED_OUT) return "timeout";
  if (error.message === CLOSED_IN_FLIGHT) return "disconnected";
  return "unreachable";
}

/** The failure a reply error code stands for, as the increment scripts report it for a refused write. */
export function failureOfCode(code: string): RedisFailure {
  if (code === "OOM") return "oom";
  if (code === "NOREPLICAS") return "noreplicas";
  return "refused";
}

/**
 * True when the command failed because Redis could not be reached (no connection, the connection lost):
 * what a connection's watch reports (lib/redis/connection.ts), not each command.
 */
export function isRedisUnreachable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  return (
    error.message === NOT_SENT || error.message === CLOSED_IN_FLIGHT || UNREACHABLE_NAMES.has(error.name)
  );
}

/** True when Redis itself answered with an error (as opposed to not answering at all). */
export function isRedisReply(error: unknown): boolean {
  return replyCode(error) !== undefined;
}

/** True when a Redis Cluster client should reload its slot map before the next command to this slot. */
export function suggestsStaleSlotMap(error: unknown): boolean {
  const code = replyCode(error);
  return code === undefined ? isRedisUnreachable(error) : SLOT_MAP_CODES.has(code);
}

/** True for the NOSCRIPT a server answers when it does not know a script's SHA (a restart, a flush). */
export function isUnknownScript(error: unknown): boolean {
  return replyCode(error) === "NOSCRIPT";
}
