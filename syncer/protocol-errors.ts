import type { BatchHeader } from "./batch.ts";

/**
 * Redis holds a shard's state that Postgres shows it once went beyond: a replica promoted without the
 * latest writes. Syncing the shard now could count increments twice, so it is not synced until an operator
 * has looked (docs/operations.md, "Redis went back in time").
 */
export class RedisWentBackError extends Error {
  override name = "RedisWentBackError";
  constructor(
    readonly shard: number,
    reason: string,
  ) {
    super(`Redis went back in time on shard ${shard}: ${reason}`);
  }
}

/** The replicas did not confirm a swap in time: the batch waits in Redis, and is resumed next cycle. */
export class SwapUnconfirmedError extends Error {
  override name = "SwapUnconfirmedError";
  constructor(
    readonly shard: number,
    readonly batchId: string,
  ) {
    super(
      `the replicas did not confirm the swap of shard ${shard}'s batch ${batchId} within REDIS_WAIT_TIMEOUT_MS`,
    );
  }
}

/** A batch's HSCAN missed fields: it is rolled back and read again from the start, next cycle. */
export class IncompleteScanError extends Error {
  override name = "IncompleteScanError";
  constructor(header: BatchHeader, read: number, fields: number, what: "keys" | "resets" = "keys") {
    super(
      `the read of shard ${header.shard}'s batch ${header.id} found ${read} of its ${fields} ${what} (Redis changed under the scan: a failover or a restart); it is read again next cycle`,
    );
  }
}

/**
 * A batch swapped longer ago than the ledger retention: its ledger row, if it was ever committed, may have
 * been pruned, so applying it could count it twice. It stays in Redis, failing its shard every cycle, for an
 * operator to look at.
 */
export class BatchTooOldError extends Error {
  override name = "BatchTooOldError";
  constructor(batchId: string, swappedAt: Date) {
    super(
      `batch ${batchId} was swapped at ${swappedAt.toISOString()}, longer ago than the ledger retention: ` +
        "refusing to apply it (it may already be counted); it stays in Redis for an operator",
    );
  }
}
