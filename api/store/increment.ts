import { createHash } from "node:crypto";
import type { Keyspace, ShardKeys } from "../../lib/redis/keyspace.ts";
import type {
  GroupResult,
  Increment,
  IncrementOnceResult,
  Refused,
  Scripts,
} from "../../lib/redis/scripts.ts";
import { batchPerTurn } from "../../lib/turn-batch.ts";
import { ApiError, type FieldError } from "../errors.ts";
import { redisFailure, redisFailureKind } from "./redis-errors.ts";

export interface IdempotencyKey {
  /** Who sent it: keys are per client, so two clients may use the same key independently. */
  clientId: string;
  key: string;
}

/** "applied" now, or "replayed": an earlier request with the same Idempotency-Key already applied it. */
export type IncrementOutcome = "applied" | "replayed";

/** POST /increment's store: one increment. */
export type Incrementer = (
  key: string,
  value: number,
  idempotency?: IdempotencyKey,
) => Promise<IncrementOutcome>;

/**
 * POST /increments' store: many increments, each shard's part applied whole or not at all. Throws an
 * ApiError that says which increments were refused, and whether any part may have been applied.
 */
export type BatchIncrementer = (
  increments: readonly Increment[],
  idempotency?: IdempotencyKey,
) => Promise<IncrementOutcome>;

export interface IncrementerOptions {
  /** How long an Idempotency-Key is remembered. */
  idempotencyTtlSeconds: number;
  /** Most Idempotency-Key records held at once, over every shard. */
  idempotencyMaxRecords: number;
}

// A turn's increments go to Redis in scripts of at most this many, so that one burst cannot make a script
// that holds Redis up for long (a group is never split, so one may carry a whole batch's part).
const MAX_INCREMENTS_PER_SCRIPT = 1_000;

// Records expire all the time, so room comes back soon: the syncer drops expired ones every cycle.
const CAPACITY_RETRY_AFTER_S = 5;

const OUT_OF_RANGE = "the pending total for this key would leave the 64-bit range";

/**
 * Redis applied the increments but the replicas they must reach did not confirm holding them in time: a
 * failover could still undo them, so their outcome is unknown.
 */
type Unconfirmed = "unconfirmed";

/** One request's increments in one shard, waiting for the end of the event-loop turn. */
interface PendingGroup {
  shard: ShardKeys;
  increments: readonly Increment[];
  settle(result: GroupResult | Unconfirmed | Error): void;
}

/** One shard's part of a request: its increments, and where each stands in the request. */
interface ShardPart {
  shard: ShardKeys;
  increments: Increment[];
  indexes: number[];
}

/**
 * Adds to the dirty hashes of the shards.
 *
 * Without an Idempotency-Key, the increments that arrive in one event-loop turn go to Redis together, one
 * script per shard they touch (increment-batch.lua): one command instead of one per request, which was the
 * API's largest remaining cost per increment. Each request's part in a shard is a group, applied whole or
 * not at all and answered only once Redis has applied it. The shard is the key's own (Keyspace.shardOf), so
 * a key is one Postgres row per cycle however many shards there are.
 *
 * With a key, each shard part has its own record beside it in its shard (the key's, for a single
 * increment): shards stay key-disjoint, so syncers can apply them in parallel. A retry of the same request
 * touches the same shards and finds its records; one Lua script checks a record and applies its part.
 */
export function createIncrementers(
  scripts: Scripts,
  keyspace: Keyspace,
  options: IncrementerOptions,
): { one: Incrementer; many: BatchIncrementer } {
  const limits = {
    ttlSeconds: options.idempotencyTtlSeconds,
    // Records spread evenly over the shards (by digest), so each holds its share of the bound.
    maxRecordsInShard: Math.ceil(options.idempotencyMaxRecords / keyspace.shards.length),
  };

  const sendToShard = async (shard: ShardKeys, groups: PendingGroup[]) => {
    try {
      const { value: results, confirmed } = await scripts.incrementGroups(
        shard,
        groups.map((group) => group.increments),
      );
      for (const [index, group] of groups.entries()) {
        const result = results[index] ?? new Error("no reply for this group");
        group.settle(result === "applied" && !confirmed ? "unconfirmed" : result);
      }
    } catch (error) {
      for (const group of groups) group.settle(error instanceof Error ? error : new Error(String(error)));
    }
  };
  // Per shard, the turn's groups cut into calls of at most MAX_INCREMENTS_PER_SCRIPT increments each.
  const collect = batchPerTurn<PendingGroup>((pending) => {
    const calls = new Map<ShardKeys, { groups: PendingGroup[]; size: number }[]>();
    for (const group of pending) {
      const shardCalls = calls.get(group.shard) ?? [];
      calls.set(group.shard, shardCalls);
      let call = shardCalls.at(-1);
      if (
        call === undefined ||
        (call.size > 0 && call.size + group.increments.length > MAX_INCREMENTS_PER_SCRIPT)
      ) {
        call = { groups: [], size: 0 };
        shardCalls.push(call);
      }
      call.groups.push(group);
      call.size += group.increments.length;
    }
    for (const [shard, shardCalls] of calls)
      for (const call of shardCalls) void sendToShard(shard, call.groups);
  });
  const applyGroup = (shard: ShardKeys, increments: readonly Increment[]) =>
    new Promise<GroupResult | Unconfirmed | Error>((settle) => collect({ shard, increments, settle }));

  const applyOnce = async (part: ShardPart, idempotency: IdempotencyKey, fingerprint: string) => {
    const record = keyspace.idempotencyRecord(part.shard, idempotency.clientId, idempotency.key);
    const { value, confirmed } = await scripts.incrementOnce(record, part.increments, fingerprint, limits);
    const result: IncrementOnceResult | Unconfirmed =
      (value === "applied" || value === "replayed") && !confirmed ? "unconfirmed" : value;
    return result;
  };

  const one: Incrementer = async (key, value, idempotency) => {
    const increment = { key, value };
    const shard = keyspace.shardOf(key);
    if (idempotency === undefined) {
      const result = storeFailureOf(await applyGroup(shard, [increment]));
      if (result === "applied") return "applied";
      if (result === "unconfirmed") throw unconfirmed();
      throw result instanceof Error ? redisFailure(result) : outOfRange(result);
    }
    let result: Awaited<ReturnType<typeof applyOnce>> | Error;
    try {
      result = storeFailureOf(
        await applyOnce(
          { shard, increments: [increment], indexes: [0] },
          idempotency,
          sha256(JSON.stringify([key, value])),
        ),
      );
    } catch (error) {
      throw redisFailure(error);
    }
    if (result instanceof Error) throw redisFailure(result);
    if (typeof result === "object") throw outOfRange(result);
    if (result === "unconfirmed") throw unconfirmed();
    if (result === "full") throw capacityReached();
    if (result === "reused") throw keyReused();
    return result;
  };

  const many: BatchIncrementer = async (increments, idempotency) => {
    const parts = new Map<ShardKeys, ShardPart>();
    increments.forEach((increment, index) => {
      const shard = keyspace.shardOf(increment.key);
      const part = parts.get(shard) ?? { shard, increments: [], indexes: [] };
      part.increments.push(increment);
      part.indexes.push(index);
      parts.set(shard, part);
    });
    if (idempotency === undefined) {
      const outcomes = await Promise.all(
        [...parts.values()].map(async (part) => ({
          part,
          result: storeFailureOf(await applyGroup(part.shard, part.increments)),
        })),
      );
      return batchOutcome(outcomes, increments.length, false);
    }
    // What a retry must repeat to be the same request.
    const fingerprint = sha256(JSON.stringify(increments.map(({ key, value }) => [key, value])));
    const outcomes = await Promise.all(
      [...parts.values()].map(async (part) => {
        try {
          return { part, result: storeFailureOf(await applyOnce(part, idempotency, fingerprint)) };
        } catch (error) {
          return { part, result: error instanceof Error ? error : new Error(String(error)) };
        }
      }),
    );
    return batchOutcome(outcomes, increments.length, true);
  };

  return { one, many };
}

type PartResult = GroupResult | Unconfirmed | Error | "replayed" | "reused" | "full";

/**
 * The answer to a batch from its shard parts' results. Parts on different shards cannot be one atomic step
 * (on Redis Cluster they are on different servers), so a batch some of whose parts failed is never an
 * ambiguous success: the error says which increments were refused and whether others may be in Redis.
 */
function batchOutcome(
  outcomes: { part: ShardPart; result: PartResult }[],
  total: number,
  idempotent: boolean,
): IncrementOutcome {
  const done = outcomes.filter(({ result }) => result === "applied" || result === "replayed");
  if (done.length === outcomes.length) {
    return done.every(({ result }) => result === "replayed") ? "replayed" : "applied";
  }
  const applied = done.reduce((sum, { part }) => sum + part.increments.length, 0);
  const retry = idempotent
    ? "Retry with the same Idempotency-Key: parts already applied are not applied again"
    : "A retry would count those again; send batches with an Idempotency-Key to retry them safely";
  const partly =
    applied > 0 ? ` ${applied} of the ${total} increments were applied (other shards). ${retry}.` : "";
  const reused = outcomes.find(({ result }) => result === "reused");
  if (reused) throw keyReused(partly);
  const refused = outcomes.flatMap(({ part, result }) =>
    typeof result === "object" && !(result instanceof Error) ? [{ part, result }] : [],
  );
  const failed = outcomes.find(
    ({ result }) => result instanceof Error || result === "full" || result === "unconfirmed",
  );
  if (failed?.result === "full") throw capacityReached(partly);
  if (failed?.result === "unconfirmed") throw unconfirmed(partly);
  if (failed && failed.result instanceof Error) {
    const error = redisFailure(failed.result);
    // Nothing applied: the single increment's wording holds ("it was not counted"); else say what was.
    const detail =
      applied > 0
        ? `the counter store did not take ${total - applied} of the ${total} increments;${partly}`
        : error.message;
    throw new ApiError(error.code, detail, { headers: error.headers, cause: error.cause });
  }
  const errors: FieldError[] = refused.map(({ part, result }) => ({
    pointer: `/increments/${part.indexes[result.refused] ?? 0}/value`,
    detail: OUT_OF_RANGE,
  }));
  throw new ApiError(
    "counter_out_of_range",
    `${errors.length} increment(s) refused: ${OUT_OF_RANGE}.${partly}`,
    {
      errors,
    },
  );
}

/**
 * A refusal is the increment's fault only when its total would leave 64 bits; HINCRBY refused for another
 * reason (Redis out of memory) is the store failing, answered as such (503 redis_full).
 */
function storeFailureOf<T>(result: T | Refused): T | Refused | Error {
  if (typeof result !== "object" || result === null || result instanceof Error || !("refused" in result)) {
    return result;
  }
  const error = asReplyError(result.error);
  return redisFailureKind(error) === "overflow" ? result : error;
}

function outOfRange(refused: Refused): ApiError {
  return new ApiError("counter_out_of_range", OUT_OF_RANGE, { cause: asReplyError(refused.error) });
}

function unconfirmed(more = ""): ApiError {
  return new ApiError(
    "replication_unconfirmed",
    `Redis applied the increment but its replicas did not confirm holding it within REDIS_WAIT_TIMEOUT_MS, so a failover could still undo it: it may or may not count. Retry with the same Idempotency-Key, which applies it at most once${more && `.${more}`}`,
    { headers: { "Retry-After": "1" } },
  );
}

function capacityReached(more = ""): ApiError {
  return new ApiError(
    "idempotency_capacity",
    `the service holds as many Idempotency-Key records as IDEMPOTENCY_MAX_RECORDS allows; the increment was not counted. Retry later, or send it without an Idempotency-Key${more && `.${more}`}`,
    { headers: { "Retry-After": String(CAPACITY_RETRY_AFTER_S) } },
  );
}

function keyReused(more = ""): ApiError {
  return new ApiError(
    "idempotency_key_reused",
    `this Idempotency-Key was already used with a different body; use a new key for a new increment${more && `.${more}`}`,
  );
}

/** The error a HINCRBY of its own would have been answered with (the scripts return its text). */
function asReplyError(message: string): Error {
  const error = new Error(message);
  error.name = "ReplyError";
  return error;
}

function sha256(text: string): string {
  return createHash("sha256").update(text).digest("base64url");
}
