import type pg from "pg";
import type { ShardKeys } from "../lib/redis/keyspace.ts";
import { readSyncState } from "./sync-state.ts";

/**
 * What a syncer knows of each shard's progress in Postgres: the lowest seq its next batch may have (the last
 * committed one + 1, so numbering keeps rising even when Redis lost its data), and the time up to which
 * Postgres holds every accepted increment, from which staleness is measured. Learnt from sync_state, then
 * kept up as batches commit; only ever moved forward.
 */
export class ShardProgress {
  readonly #pool: pg.Pool;
  readonly #startedAt = Date.now();
  readonly #nextSeq = new Map<number, bigint>();
  /** Per shard, epoch ms up to which Postgres holds every accepted increment, as far as we know. */
  readonly #syncedThrough = new Map<number, number>();
  #loaded = false;

  constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  /** Shards changed hands: another syncer may have synced them further than this one knows. */
  forget(): void {
    this.#loaded = false;
  }

  /** Reads sync_state unless it was read since the last forget(); with Postgres down, tries next cycle. */
  async load(): Promise<void> {
    if (this.#loaded) return;
    try {
      for (const [shard, state] of await readSyncState(this.#pool)) {
        this.committed(shard, state.lastSeq);
        this.advance(shard, state.syncedThrough);
      }
      this.#loaded = true;
    } catch {
      // Postgres is down: the cycle will fail and report it.
    }
  }

  nextSeqFloor(shard: number): bigint {
    return this.#nextSeq.get(shard) ?? 1n;
  }

  committed(shard: number, seq: bigint): void {
    if (seq + 1n > this.nextSeqFloor(shard)) this.#nextSeq.set(shard, seq + 1n);
  }

  /** Postgres holds every increment of the shard accepted before `through`. */
  advance(shard: number, through: Date): void {
    const time = through.getTime();
    if (time > (this.#syncedThrough.get(shard) ?? 0)) this.#syncedThrough.set(shard, time);
  }

  /**
   * now − the time up to which Postgres holds every accepted increment, over `shards`: the swap time of the
   * last committed batch, or of a cycle that found nothing pending. Before the first sync it counts from
   * this syncer's start; 0 without shards.
   */
  stalenessMs(now: number, shards: readonly ShardKeys[]): number {
    if (shards.length === 0) return 0;
    const known = shards.map((keys) => this.#syncedThrough.get(keys.shard) ?? this.#startedAt);
    return Math.max(0, now - Math.min(...known));
  }
}
