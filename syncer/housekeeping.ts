import type pg from "pg";
import type { Logger } from "../lib/logger.ts";
import type { ShardKeys } from "../lib/redis/keyspace.ts";
import type { Scripts } from "../lib/redis/scripts.ts";
import { pruneLedger } from "./sync-state.ts";

const PRUNE_LEDGER_EVERY_MS = 3_600_000;

export interface HousekeepingOptions {
  pool: pg.Pool;
  scripts: Scripts;
  logger: Logger;
  /** Ledger rows older than this are pruned. Undefined: the ledger is kept forever. */
  ledgerRetentionMs: number | undefined;
}

/** What a syncer tidies after its cycles: the ledger's old rows, and the idempotency indexes of its shards. */
export class Housekeeping {
  readonly #options: HousekeepingOptions;
  #lastLedgerPruneAt = Number.NEGATIVE_INFINITY;

  constructor(options: HousekeepingOptions) {
    this.#options = options;
  }

  /**
   * After a cycle over `shards`: the ledger pruned (at most hourly, and only when `everyShardSynced`: then
   * no unfinished batch older than the cycle exists, so no older ledger row can still be needed to refuse
   * one), and the shards' expired idempotency index entries dropped. Resolves to the records the shards
   * still hold, undefined when Redis could not be asked.
   */
  async afterCycle(shards: readonly ShardKeys[], everyShardSynced: boolean): Promise<number | undefined> {
    if (everyShardSynced) await this.#pruneLedgerHourly();
    return this.#pruneIdempotencyIndexes(shards).catch(() => undefined);
  }

  async #pruneLedgerHourly(): Promise<void> {
    const { ledgerRetentionMs, pool, logger } = this.#options;
    if (
      ledgerRetentionMs === undefined ||
      performance.now() - this.#lastLedgerPruneAt < PRUNE_LEDGER_EVERY_MS
    )
      return;
    this.#lastLedgerPruneAt = performance.now();
    try {
      const pruned = await pruneLedger(pool, ledgerRetentionMs);
      if (pruned > 0) logger.info({ pruned }, "pruned old ledger rows");
    } catch (error) {
      logger.warn({ err: error }, "could not prune the ledger; will try again in an hour");
    }
  }

  /**
   * The records themselves expire by TTL; their index is what bounds them (IDEMPOTENCY_MAX_RECORDS), so it
   * is kept as small as the live records even where the API never meets the bound. Freeing memory, these
   * commands run on a full Redis too.
   */
  async #pruneIdempotencyIndexes(shards: readonly ShardKeys[]): Promise<number> {
    const now = Date.now();
    const counts = await Promise.all(
      shards.map((shard) => this.#options.scripts.pruneIdempotencyIndex(shard, now)),
    );
    return counts.reduce((sum, count) => sum + count, 0);
  }
}
