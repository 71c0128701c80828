import { createHash } from "node:crypto";

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
  /** Counter keys reset since the dirty hash was swapped (a set): their earlier totals are discarded. */
  resets: string;
  /** The resets of the batch being written to Postgres: the former `resets`, renamed with the dirty hash. */
  flushingResets: string;
  /** The shard's Idempotency-Key records by expiry (sorted set), to bound and count them. */
  idempotencyIndex: string;
  /** Which syncer applies the shard: its holder id, with a TTL. */
  lease: string;
}

export function shardKeys(prefix: string, shard: number): ShardKeys {
  const tag = `{${prefix}:${shard}}`;
  return {
    shard,
    dirty: `${tag}:dirty`,
    flushing: `${tag}:flushing`,
    flushingMeta: `${tag}:flushing:meta`,
    seq: `${tag}:seq`,
    resets: `${tag}:resets`,
    flushingResets: `${tag}:flushing:resets`,
    idempotencyIndex: `${tag}:idem-index`,
    lease: `${tag}:lease`,
  };
}

/**
 * The record of one client's Idempotency-Key, in the shard's slot so the increment and its record are one
 * atomic script on Redis Cluster too. `digest` identifies (client, key) without putting either in the name.
 */
export function idempotencyRecordKey(prefix: string, shard: number, digest: string): string {
  return `{${prefix}:${shard}}:idem:${digest}`;
}

/**
 * The shard whose dirty hash takes a counter's increments (those without an Idempotency-Key). By key, so
 * that one key's deltas sit in one shard: Postgres gets one row per distinct key per cycle whatever the
 * shard count, and more shards mean smaller batches, each committed sooner after its own swap. Reads and the
 * syncer cover every shard, so the deltas a key left in another shard before SYNC_SHARDS changed are still
 * counted.
 */
export function shardOfKey(key: string, shards: number): number {
  if (shards === 1) return 0;
  // FNV-1a over the UTF-16 code units, then murmur3's finaliser: FNV's low bits depend only on the low bits
  // of each character, so without the mixing keys such as "user:a" and "user:e" would always share a shard.
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 0x01000193);
  hash = Math.imul(hash ^ (hash >>> 16), 0x85ebca6b);
  hash = Math.imul(hash ^ (hash >>> 13), 0xc2b2ae35);
  return ((hash ^ (hash >>> 16)) >>> 0) % shards;
}

export function allShardKeys(prefix: string, shards: number): ShardKeys[] {
  return Array.from({ length: shards }, (_, shard) => shardKeys(prefix, shard));
}

/** The syncer processes alive (a sorted set by expiry): they share the shards' leases by their number. */
export function syncersKey(prefix: string): string {
  return `${prefix}:syncers`;
}

/** The syncer's per-minute activity stream, unless STATS_STREAM names another key. */
export function activityStreamKey(prefix: string): string {
  return `${prefix}:activity`;
}

export function rateLimitKeyPrefix(prefix: string): string {
  return `${prefix}:ratelimit`;
}

/** The deployment's keyspace, as configured: REDIS_KEY_PREFIX and SYNC_SHARDS. */
export function keyspaceOf(config: { redis: { keyPrefix: string }; sync: { shards: number } }): Keyspace {
  return new Keyspace(config.redis.keyPrefix, config.sync.shards);
}

/** Where one client's Idempotency-Key is recorded: in a shard, under a key that names neither. */
export interface IdempotencyRecord {
  shard: ShardKeys;
  key: string;
  /** Identifies (client, Idempotency-Key); also its member in the shard's index. */
  digest: string;
}

/**
 * The keyspace of one tally deployment, built once from REDIS_KEY_PREFIX and SYNC_SHARDS: the only place
 * that names keys and chooses shards. The API, the syncer and the tools ask it; none of them builds a key.
 */
export class Keyspace {
  readonly prefix: string;
  readonly shards: readonly ShardKeys[];
  readonly syncers: string;
  readonly activityStream: string;
  readonly rateLimitPrefix: string;

  constructor(prefix: string, shardCount: number) {
    if (!Number.isInteger(shardCount) || shardCount < 1) throw new RangeError(`shard count ${shardCount}`);
    this.prefix = prefix;
    this.shards = allShardKeys(prefix, shardCount);
    this.syncers = syncersKey(prefix);
    this.activityStream = activityStreamKey(prefix);
    this.rateLimitPrefix = rateLimitKeyPrefix(prefix);
  }

  /** The shard whose dirty hash takes the counter key's increments (see shardOfKey). */
  shardOf(counterKey: string): ShardKeys {
    return this.#at(shardOfKey(counterKey, this.shards.length));
  }

  /**
   * Where a client's Idempotency-Key is recorded for a request's part in `shard`: one record per shard the
   * request touches, each in its part's slot, so each part is checked and applied in one script even on
   * Redis Cluster, and no shard holds anything of another's keys.
   */
  idempotencyRecord(shard: ShardKeys, clientId: string, idempotencyKey: string): IdempotencyRecord {
    const digest = createHash("sha256")
      .update(`${clientId}\n${idempotencyKey}\n${shard.shard}`)
      .digest("base64url");
    return { shard, key: idempotencyRecordKey(this.prefix, shard.shard, digest), digest };
  }

  #at(index: number): ShardKeys {
    const shard = this.shards[index];
    if (shard === undefined) throw new RangeError(`no shard ${index} of ${this.shards.length}`);
    return shard;
  }
}
