import type { RedisFailure } from "../../lib/redis/errors.ts";
import type { PartResult } from "./part-result.ts";

/** How many of a request's increments were applied, on other shards than the one that failed it. */
export interface Partly {
  applied: number;
  total: number;
}

/**
 * What became of a write request, for the API to answer (api/store-problems.ts). Shard parts cannot be one
 * atomic step (on a Redis Cluster they are on different servers), so a request some of whose parts failed
 * says how many increments were applied (`partly`), and whether it carried an Idempotency-Key (a retry with
 * it applies each part once; without one, a retry counts the applied parts again).
 */
export type WriteOutcome = { kind: "applied" } | { kind: "replayed" } | FailedWrite;

export type FailedWrite = { partly: Partly | undefined; idempotent: boolean } & (
  | { kind: "overflow"; positions: number[] }
  | { kind: "reused" }
  | { kind: "full" }
  | { kind: "unconfirmed" }
  | { kind: "failed"; failure: RedisFailure; cause?: unknown }
);

/** One part's result, with where its increments stand in the request. */
export interface PartOutcome {
  result: PartResult;
  /** The request's index of each increment of the part. */
  indexes: readonly number[];
}

/** The request's outcome from its parts': applied only when every part was, else the weightiest failure. */
export function writeOutcome(
  parts: readonly PartOutcome[],
  total: number,
  idempotent: boolean,
): WriteOutcome {
  let applied = 0;
  let replayed = 0;
  for (const { result, indexes } of parts) {
    if (result.kind === "applied") applied += indexes.length;
    if (result.kind === "replayed") replayed += indexes.length;
  }
  if (applied + replayed === total) return replayed === total ? { kind: "replayed" } : { kind: "applied" };
  const done = applied + replayed;
  const common = { partly: done > 0 ? { applied: done, total } : undefined, idempotent };
  const first = (kind: PartResult["kind"]) => parts.find(({ result }) => result.kind === kind)?.result;
  if (first("reused")) return { kind: "reused", ...common };
  if (first("full")) return { kind: "full", ...common };
  if (first("unconfirmed")) return { kind: "unconfirmed", ...common };
  const failed = first("failed");
  if (failed?.kind === "failed")
    return { kind: "failed", failure: failed.failure, cause: failed.cause, ...common };
  const positions = parts.flatMap(({ result, indexes }) =>
    result.kind === "overflow" ? [indexes[result.position] ?? 0] : [],
  );
  return { kind: "overflow", positions, ...common };
}
