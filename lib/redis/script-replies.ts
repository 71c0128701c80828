import { failureOfCode, type RedisFailure } from "./errors.ts";

/**
 * The scripts' replies (lib/redis/scripts/*.lua answer with reason codes) read into the values their callers
 * use. A reply of another shape is a script and its caller out of step: an UnexpectedReplyError.
 */

export interface Increment {
  key: string;
  value: number;
}

/**
 * Why a part of increments was refused, nothing of it applied: its pending total would leave 64 bits
 * ("overflow", the client's doing), or Redis refused the write (full, without its replicas, …).
 */
export type RefusalReason = "overflow" | RedisFailure;

export interface Refused {
  kind: "refused";
  /** The increment that was refused, from 0 in its part. */
  position: number;
  reason: RefusalReason;
}

export const APPLIED = { kind: "applied" } as const;
export const REPLAYED = { kind: "replayed" } as const;
export const REUSED = { kind: "reused" } as const;
export const FULL = { kind: "full" } as const;

/** A group of increments (increment-batch-1.lua): applied whole, or refused whole. */
export type GroupResult = typeof APPLIED | Refused;

/**
 * increment-once-3.lua: applied now; replayed (this record applied this body before); reused (with another
 * body); full (no room for another record); or refused. Nothing is applied but for "applied".
 */
export type IncrementOnceResult = typeof APPLIED | typeof REPLAYED | typeof REUSED | typeof FULL | Refused;

/** The batch swap-4.lua hands out to apply, new or left over. */
export interface SwappedBatch {
  batchId: string;
  seq: bigint;
  swappedAt: Date;
  /** True for a batch a crashed or slower syncer left unfinished. */
  resumed: boolean;
  /** True when the shard's sequence counter was missing (Redis lost its data) and restarted from Postgres'. */
  renumbered: boolean;
}

/**
 * What swap-4.lua found: a batch to apply, nothing to flush, or a shard whose sequence counter is below what
 * Postgres committed, which only a Redis that went back in time shows (nothing was done).
 */
export type SwapOutcome =
  | { kind: "batch"; batch: SwappedBatch }
  | { kind: "empty" }
  | { kind: "behind"; seq: bigint };

/** What pending-6.lua reads of one shard for some counter keys, each list index-aligned with the keys. */
export interface ShardPending {
  /** The flushing batch's seq; null when there is no flushing batch. */
  flushingSeq: string | null;
  /** The last seq the shard handed out; null before its first batch. */
  lastSeq: string | null;
  /** Deltas in the dirty hash; null when absent. */
  dirty: (string | null)[];
  /** Deltas in the flushing hash; null when absent. */
  flushing: (string | null)[];
  /** Reset since the dirty hash was swapped. */
  dirtyReset: boolean[];
  /** Reset in the flushing batch. */
  flushingReset: boolean[];
}

export class UnexpectedReplyError extends Error {
  override name = "UnexpectedReplyError";
  constructor(script: string, reply: unknown) {
    super(`${script} answered ${JSON.stringify(reply)}, which tally does not know`);
  }
}

export function groupResults(reply: unknown, groups: number): GroupResult[] {
  if (!Array.isArray(reply) || reply.length !== groups)
    throw new UnexpectedReplyError("increment-batch", reply);
  return reply.map((entry) => (entry === "applied" ? APPLIED : refusal(entry, "increment-batch")));
}

export function incrementOnceResult(reply: unknown): IncrementOnceResult {
  const code = Array.isArray(reply) ? reply[0] : undefined;
  switch (code) {
    case "applied":
      return APPLIED;
    case "replayed":
      return REPLAYED;
    case "reused":
      return REUSED;
    case "full":
      return FULL;
    default:
      return refusal(reply, "increment-once");
  }
}

export function swapOutcome(reply: unknown): SwapOutcome {
  const [code, ...fields] = Array.isArray(reply) ? reply : [];
  if (code === "empty") return { kind: "empty" };
  if (code === "behind" && typeof fields[0] === "string") return { kind: "behind", seq: BigInt(fields[0]) };
  const [batchId, seq, swappedAtMs, renumbered] = fields;
  if (
    (code === "new" || code === "resumed") &&
    typeof batchId === "string" &&
    typeof seq === "string" &&
    typeof swappedAtMs === "string"
  ) {
    return {
      kind: "batch",
      batch: {
        batchId,
        seq: BigInt(seq),
        swappedAt: new Date(Number(swappedAtMs)),
        resumed: code === "resumed",
        renumbered: renumbered === 1,
      },
    };
  }
  throw new UnexpectedReplyError("swap", reply);
}

export function shardPending(reply: unknown, keys: number): ShardPending {
  const [flushingSeq, lastSeq, dirty, flushing, dirtyReset, flushingReset] = Array.isArray(reply)
    ? reply
    : [];
  const text = (value: unknown) => (typeof value === "string" ? value : null);
  const list = <T>(value: unknown, item: (entry: unknown) => T): T[] => {
    if (!Array.isArray(value) || value.length !== keys) throw new UnexpectedReplyError("pending", reply);
    return value.map(item);
  };
  return {
    flushingSeq: text(flushingSeq),
    lastSeq: text(lastSeq),
    dirty: list(dirty, text),
    flushing: list(flushing, text),
    dirtyReset: list(dirtyReset, (entry) => entry === 1),
    flushingReset: list(flushingReset, (entry) => entry === 1),
  };
}

/** A reply that is one of `codes`, or an UnexpectedReplyError. */
export function oneOf<Code extends string>(script: string, reply: unknown, codes: readonly Code[]): Code {
  const found = codes.find((code) => code === reply);
  if (found === undefined) throw new UnexpectedReplyError(script, reply);
  return found;
}

function refusal(reply: unknown, script: string): Refused {
  const [code, position, reason] = Array.isArray(reply) ? reply : [];
  if (code !== "refused" || typeof position !== "number" || typeof reason !== "string") {
    throw new UnexpectedReplyError(script, reply);
  }
  return {
    kind: "refused",
    position: position - 1,
    reason: reason === "overflow" ? "overflow" : failureOfCode(reason),
  };
}
