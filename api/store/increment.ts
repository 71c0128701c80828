import { createHash } from "node:crypto";
import type { RedisClient } from "../../lib/redis/client.ts";
import { allShardKeys, idempotencyRecordKey } from "../../lib/redis/keys.ts";
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
  keyPrefix: string;
  shards: number;
  /** How long an Idempotency-Key is remembered. */
  idempotencyTtlSeconds: number;
}

/**
 * Adds to the dirty hash of a shard. Without an Idempotency-Key the shard is random, so even one hot key is
 * spread over every shard (reads and the syncer add the shards back up). With one, the shard is derived
 * from (client, key), so every retry lands on the shard that holds the key's record, and one Lua script
 * checks the record and applies the increment together.
 */
export function createIncrementer(redis: RedisClient, options: IncrementerOptions): Incrementer {
  const { keyPrefix, shards, idempotencyTtlSeconds } = options;
  const dirtyHashes = allShardKeys(keyPrefix, shards).map((keys) => keys.dirty);
  // The index is below the length by construction, and there is at least one shard.
  const dirtyHash = (shard: number) => dirtyHashes[shard] as string;

  return async function increment(key, value, idempotency) {
    try {
      if (idempotency === undefined) {
        await redis.hincrby(dirtyHash(Math.floor(Math.random() * shards)), key, value);
        return "applied";
      }
      const digest = sha256(`${idempotency.clientId}\n${idempotency.key}`);
      const shard = digest.readUInt32BE(0) % shards;
      const result = await redis.tallyIncrementOnce(
        dirtyHash(shard),
        idempotencyRecordKey(keyPrefix, shard, digest.toString("base64url")),
        key,
        value,
        sha256(JSON.stringify([key, value])).toString("base64url"),
        idempotencyTtlSeconds,
      );
      if (result === -1) {
        throw new ApiError(
          "idempotency_key_reused",
          "this Idempotency-Key was already used with a different body; use a new key for a new increment",
        );
      }
      return result === 1 ? "applied" : "replayed";
    } catch (error) {
      if (error instanceof ApiError) throw error;
      throw redisFailure(error);
    }
  };
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}
