import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { shardKeys } from "../../lib/redis/keyspace.ts";
import { addDeltas, createSyncer, readCounters, swapAside, useSyncerEnv } from "../support/syncer.ts";

// The batch ledger is pruned, and a batch too old for the ledger to vouch for is refused, not applied.

const DAY_MS = 86_400_000;
const env = useSyncerEnv();

async function ledgerRow(committedDaysAgo: number): Promise<string> {
  const id = randomUUID();
  await env.pool.query(
    `INSERT INTO sync_batches (batch_id, shard, seq, swapped_at, committed_at, key_count, delta_sum)
     VALUES ($1, 0, 1, now(), now() - $2 * interval '1 day', 0, 0)`,
    [id, committedDaysAgo],
  );
  return id;
}

describe("ledger retention", () => {
  it("prunes rows older than the retention after a cycle in which every shard synced, and keeps the rest", async () => {
    const old = await ledgerRow(40);
    const recent = await ledgerRow(2);
    const prefix = env.newPrefix();
    await addDeltas(env.redis, prefix, [["k", 1]]);
    const syncer = createSyncer({ redis: env.redis, pool: env.pool, prefix, ledgerRetentionMs: 30 * DAY_MS });
    const report = await syncer.runCycle();
    expect(report.failures).toEqual([]);

    const { rows } = await env.pool.query<{ batch_id: string }>("SELECT batch_id FROM sync_batches");
    const ids = rows.map((row) => row.batch_id);
    expect(ids).not.toContain(old);
    expect(ids).toContain(recent);
    // The batch this cycle applied is in the ledger too.
    expect(ids.length).toBe(2);
  });

  it("keeps the whole ledger when no retention is configured", async () => {
    const old = await ledgerRow(400);
    const syncer = createSyncer({ redis: env.redis, pool: env.pool, prefix: env.newPrefix() });
    await syncer.runCycle();
    const { rows } = await env.pool.query<{ batch_id: string }>("SELECT batch_id FROM sync_batches");
    expect(rows.map((row) => row.batch_id)).toEqual([old]);
  });

  it("refuses a leftover batch older than the retention: not applied, kept in Redis, the shard reported failing", async () => {
    const prefix = env.newPrefix();
    const keys = shardKeys(prefix, 0);
    await addDeltas(env.redis, prefix, [["ancient", 5]]);
    // A syncer swapped this batch 31 days ago and never finished it.
    await swapAside(env.redis, keys, randomUUID(), Date.now() - 31 * DAY_MS);
    const syncer = createSyncer({ redis: env.redis, pool: env.pool, prefix, ledgerRetentionMs: 30 * DAY_MS });

    const report = await syncer.runCycle();
    expect(report.failures.map((failure) => String(failure.error))).toEqual([
      expect.stringContaining("longer ago than the ledger retention"),
    ]);
    expect((await readCounters(env.pool)).get("ancient")).toBeUndefined();
    expect(await env.redis.hget(keys.flushing, "ancient")).toBe("5");
  });
});
