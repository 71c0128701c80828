import { createHash } from "node:crypto";
import type { Keyspace, ShardKeys } from "../../lib/redis/keyspace.ts";
import type { Scripts } from "../../lib/redis/scripts.ts";
import { batchPerTurn } from "../../lib/turn-batch.ts";
import { ApiError } from "../errors.ts";
import { redisFailure } from "./redis-errors.ts";

export interface IdempotencyKey {
  /** Who sent it: keys are per client, so two clients may use the same key independently. */
  clientId: string;
  key: string;
}

/** "applied" now, or "replayed": an earlier request with the same Idempotency-Key already applied it. */
export type IncrementOutcome = "applied" | "replayed";

export type Incrementer = (
  key: string,
  value: number,
  idempotency?: IdempotencyKey,
) => Promise<IncrementOutcome>;

export interface IncrementerOptions {
  /** How long an Idempotency-Key is remembered. */
  idempotencyTtlSeconds: number;
  /** Most Idempotency-Key records held at once, over every shard. */
  idempotencyMaxRecords: number;
}

// A turn's increments go to Redis in scripts of at most this many, so that one burst cannot make a script
// that holds Redis up for long.
const MAX_INCREMENTS_PER_SCRIPT = 1_000;

// Records expire all the time, so room comes back soon: the syncer drops expired ones every cycle.
const CAPACITY_RETRY_AFTER_S = 5;

interface PendingIncrement {
  key: string;
  value: number;
  applied(): void;
  failed(error: unknown): void;
}

/**
 * Adds to the dirty hash of a shard.
 *
 * Without an Idempotency-Key, the increments that arrive in one event-loop turn go to Redis together, one
 * script per shard they touch (increment-batch.lua): one command instead of one per request, which was the
 * API's largest remaining cost per increment. Each increment is still applied or refused on its own, and
 * each is answered only once Redis has applied it. The shard is the key's own (shardOfKey), so a key is one
 * Postgres row per cycle however many shards there are.
 *
 * With a key, the shard is derived from (client, key), so every retry lands on the shard that holds the
 * key's record, and one Lua script checks the record and applies the increment together.
 */
export function createIncrementer(
  scripts: Scripts,
  keyspace: Keyspace,
  options: IncrementerOptions,
): Incrementer {
  const { idempotencyTtlSeconds } = options;
  // Records spread evenly over the shards (by digest), so each holds its share of the bound.
  const maxRecordsInShard = Math.ceil(options.idempotencyMaxRecords / keyspace.shards.length);

  const applyBatch = async (shard: ShardKeys, batch: PendingIncrement[]) => {
    const pairs: (string | number)[] = [];
    for (const { key, value } of batch) pairs.push(key, value);
    let results: (1 | string)[];
    try {
      results = await scripts.incrementBatch(shard, pairs);
    } catch (error) {
      for (const pending of batch) pending.failed(error);
      return;
    }
    batch.forEach((pending, index) => {
      const result = results[index];
      if (result === 1) pending.applied();
      else pending.failed(asReplyError(result ?? "no reply for this increment"));
    });
  };
  const sendPerShard = (shard: ShardKeys, pending: PendingIncrement[]) => {
    for (let start = 0; start < pending.length; start += MAX_INCREMENTS_PER_SCRIPT) {
      void applyBatch(shard, pending.slice(start, start + MAX_INCREMENTS_PER_SCRIPT));
    }
  };
  const collect = batchPerTurn<PendingIncrement>((pending) => {
    const byShard = new Map<ShardKeys, PendingIncrement[]>();
    for (const increment of pending) {
      const shard = keyspace.shardOf(increment.key);
      const group = byShard.get(shard);
      if (group) group.push(increment);
      else byShard.set(shard, [increment]);
    }
    for (const [shard, group] of byShard) sendPerShard(shard, group);
  });

  return async function increment(key, value, idempotency) {
    try {
      if (idempotency === undefined) {
        await new Promise<void>((applied, failed) => collect({ key, value, applied, failed }));
        return "applied";
      }
      const result = await scripts.incrementOnce(
        keyspace.idempotencyRecord(idempotency.clientId, idempotency.key),
        { key, value, fingerprint: sha256(JSON.stringify([key, value])).toString("base64url") },
        { ttlSeconds: idempotencyTtlSeconds, maxRecordsInShard },
      );
      if (result === "full") {
        throw new ApiError(
          "idempotency_capacity",
          "the service holds as many Idempotency-Key records as IDEMPOTENCY_MAX_RECORDS allows; the increment was not counted. Retry later, or send it without an Idempotency-Key",
          { headers: { "Retry-After": String(CAPACITY_RETRY_AFTER_S) } },
        );
      }
      if (result === "reused") {
        throw new ApiError(
          "idempotency_key_reused",
          "this Idempotency-Key was already used with a different body; use a new key for a new increment",
        );
      }
      return result;
    } catch (error) {
      if (error instanceof ApiError) throw error;
      throw redisFailure(error);
    }
  };
}

/** The error a HINCRBY of its own would have been answered with (increment-batch.lua returns its text). */
function asReplyError(message: string): Error {
  const error = new Error(message);
  error.name = "ReplyError";
  return error;
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}
