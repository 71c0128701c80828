/**
 * Every Redis key tally uses, in one place. A shard's keys share a hash tag, `{prefix:N}`, so each
 * shard lives in one Redis Cluster slot and its scripts stay atomic.
 */
export interface ShardKeys {
  shard: number;
  /** The hash the API increments. */
  dirty: string;
  /** The batch being written to Postgres. */
  flushing: string;
  /** batch id, seq and swap time of the flushing hash. */
  flushingMeta: string;
  /** Per-shard batch sequence counter. */
  seq: string;
}

export function shardKeys(prefix: string, shard: number): ShardKeys {
  const tag = `{${prefix}:${shard}}`;
  return {
    shard,
    dirty: `${tag}:dirty`,
    flushing: `${tag}:flushing`,
    flushingMeta: `${tag}:flushing:meta`,
    seq: `${tag}:seq`,
  };
}

/**
 * The record of one client's Idempotency-Key, in the shard's slot so the increment and its record are one
 * atomic script on Redis Cluster too. `digest` identifies (client, key) without putting either in the name.
 */
export function idempotencyRecordKey(prefix: string, shard: number, digest: string): string {
  return `{${prefix}:${shard}}:idem:${digest}`;
}

export function allShardKeys(prefix: string, shards: number): ShardKeys[] {
  return Array.from({ length: shards }, (_, shard) => shardKeys(prefix, shard));
}

export function leaseKey(prefix: string): string {
  return `${prefix}:syncer:leader`;
}

/** The syncer's per-minute activity stream, unless STATS_STREAM names another key. */
export function activityStreamKey(prefix: string): string {
  return `${prefix}:activity`;
}

export function rateLimitKeyPrefix(prefix: string): string {
  return `${prefix}:ratelimit`;
}
