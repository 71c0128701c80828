import { type RedisFailure, redisFailureOf } from "../../lib/redis/errors.ts";
import type { GroupResult, IncrementOnceResult } from "../../lib/redis/script-replies.ts";

/**
 * What became of one shard's part of a request. Nothing of the part is in Redis but for "applied" and
 * "replayed", and maybe for "unconfirmed" and a "failed" whose failure leaves the outcome unknown (a timeout,
 * a connection lost with the write in flight).
 */
export type PartResult =
  | { kind: "applied" }
  | { kind: "replayed" }
  /** Redis applied it, but the replicas it must reach did not confirm it: a failover could undo it. */
  | { kind: "unconfirmed" }
  /** The pending total of the increment at `position` (in the part) would leave 64 bits. */
  | { kind: "overflow"; position: number }
  /** The Idempotency-Key's record holds another request. */
  | { kind: "reused" }
  /** No room for another Idempotency-Key record. */
  | { kind: "full" }
  | { kind: "failed"; failure: RedisFailure; cause?: unknown };

const APPLIED = { kind: "applied" } as const;
const REPLAYED = { kind: "replayed" } as const;
const UNCONFIRMED = { kind: "unconfirmed" } as const;

/** A script's result for a part, with whether the replicas confirmed the write. */
export function partResultOf(result: GroupResult | IncrementOnceResult, confirmed: boolean): PartResult {
  switch (result.kind) {
    case "applied":
      return confirmed ? APPLIED : UNCONFIRMED;
    case "replayed":
      return confirmed ? REPLAYED : UNCONFIRMED;
    case "reused":
    case "full":
      return result;
    case "refused":
      return result.reason === "overflow"
        ? { kind: "overflow", position: result.position }
        : { kind: "failed", failure: result.reason };
  }
}

/** A part whose script call failed as a whole: it answered with an error, or not at all. */
export function failedPart(error: unknown): PartResult {
  return { kind: "failed", failure: redisFailureOf(error), cause: error };
}
