import type { RedisClient } from "../../lib/redis/client.ts";
import { allShardKeys } from "../../lib/redis/keys.ts";
import { redisFailure } from "./redis-errors.ts";

export type Incrementer = (key: string, value: number) => Promise<void>;

/**
 * Adds to the dirty hash of a random shard. Picking at random (rather than by key) spreads even one hot
 * key over every shard; reads and the syncer add the shards back up.
 */
export function createIncrementer(redis: RedisClient, keyPrefix: string, shards: number): Incrementer {
  const dirtyHashes = allShardKeys(keyPrefix, shards).map((keys) => keys.dirty);
  return async function increment(key, value) {
    // The index is below the length by construction, and there is at least one shard.
    const dirty = dirtyHashes[Math.floor(Math.random() * dirtyHashes.length)] as string;
    try {
      await redis.hincrby(dirty, key, value);
    } catch (error) {
      throw redisFailure(error);
    }
  };
}
