/** What one shard holds for one counter key, as pending-6.lua read it. */
export interface KeyInShard {
  dirty: string | null;
  flushing: string | null;
  dirtyReset: boolean;
  flushingReset: boolean;
  /** The flushing batch is not committed yet: Postgres does not hold what it carries. */
  flushingLive: boolean;
}

export interface SettledCounter {
  /** The counter's total: what Postgres holds, then what Redis holds that Postgres does not. */
  total: bigint;
  /** False when nothing counts for the key: never counted, or reset with nothing counted since. */
  exists: boolean;
}

/**
 * The total of one counter from Postgres' value and what each shard holds of it. The key's own shard holds
 * its resets, and its deltas in order: the flushing batch's, then the dirty hash's; a reset in either
 * discards everything counted before it, Postgres' value and the deltas older shards hold (a key's deltas are
 * in another shard only from before SYNC_SHARDS changed, and a reset is refused while they are).
 */
export function settleCounter(
  persisted: bigint | null,
  home: KeyInShard,
  elsewhere: readonly KeyInShard[],
): SettledCounter {
  let total = persisted ?? 0n;
  let exists = persisted !== null;
  const add = (delta: string | null) => {
    if (delta === null) return;
    total += BigInt(delta);
    exists = true;
  };
  for (const shard of elsewhere) {
    add(shard.dirty);
    if (shard.flushingLive) add(shard.flushing);
  }
  if (home.flushingLive) {
    if (home.flushingReset) {
      total = 0n;
      exists = false;
    }
    add(home.flushing);
  }
  if (home.dirtyReset) {
    total = 0n;
    exists = false;
  }
  add(home.dirty);
  return { total, exists };
}
