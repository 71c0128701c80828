import type { RedisClient } from "../lib/redis/client.ts";
import type { ShardKeys } from "../lib/redis/keyspace.ts";

/**
 * Drops the expired entries of every shard's index of Idempotency-Key records (the records themselves
 * expire by TTL) and returns how many records remain: the count behind IDEMPOTENCY_MAX_RECORDS. Runs
 * every cycle, so the index stays as small as the live records even where the API never meets the bound.
 * The commands free memory and need none, so they run on a full Redis too.
 */
export async function pruneIdempotencyIndexes(
  redis: RedisClient,
  shards: readonly ShardKeys[],
  nowMs: number,
): Promise<number> {
  // One command per shard: on a Redis Cluster every shard is in a slot of its own.
  const counts = await Promise.all(
    shards.map(async ({ idempotencyIndex }) => {
      await redis.zremrangebyscore(idempotencyIndex, "-inf", nowMs);
      return redis.zcard(idempotencyIndex);
    }),
  );
  return counts.reduce((sum, count) => sum + count, 0);
}
