import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { BatchTransaction } from "../../syncer/batch-transaction.ts";
import { readCounters, readLedger, useSyncerEnv } from "../support/syncer.ts";

const env = useSyncerEnv();

const header = (shard: number, seq = 1n) => ({ id: randomUUID(), shard, seq, swappedAt: new Date() });
const plain = { isolateRows: false };

describe("BatchTransaction", () => {
  it("takes turns per shard: a second batch of the shard waits until the first has committed, so statements cannot deadlock", async () => {
    const first = await BatchTransaction.begin(env.pool, header(0), plain);
    if (first === null) throw new Error("a new batch should begin");
    await first.upsert(["a"], ["1"]);

    // Were both open at once, "b" then "a" here against "a" then "b" above would be a deadlock.
    let secondBegun = false;
    const second = BatchTransaction.begin(env.pool, header(0, 2n), plain).then(async (transaction) => {
      secondBegun = true;
      if (transaction === null) throw new Error("a new batch should begin");
      await transaction.upsert(["b"], ["10"]);
      await transaction.upsert(["a"], ["10"]);
      return transaction.commit({ keyCount: 2, deltaSum: 20n, resetCount: 0 });
    });
    await sleep(300);
    expect(secondBegun).toBe(false);

    await first.upsert(["b"], ["1"]);
    await first.commit({ keyCount: 2, deltaSum: 2n, resetCount: 0 });
    await second;
    expect(secondBegun).toBe(true);
    expect(await readCounters(env.pool)).toEqual(
      new Map([
        ["a", 11n],
        ["b", 11n],
      ]),
    );
  });

  it("runs batches of different shards at once: shards are key-disjoint", async () => {
    const first = await BatchTransaction.begin(env.pool, header(0), plain);
    if (first === null) throw new Error("a new batch should begin");
    await first.upsert(["shard0-key"], ["1"]);
    const second = await Promise.race([
      BatchTransaction.begin(env.pool, header(1), plain),
      sleep(2_000).then(() => "still waiting" as const),
    ]);
    if (second === null || second === "still waiting") throw new Error(`the second shard's batch: ${second}`);
    await second.upsert(["shard1-key"], ["2"]);
    await second.commit({ keyCount: 1, deltaSum: 2n, resetCount: 0 });
    await first.commit({ keyCount: 1, deltaSum: 1n, resetCount: 0 });
    expect(await readCounters(env.pool)).toEqual(
      new Map([
        ["shard0-key", 1n],
        ["shard1-key", 2n],
      ]),
    );
  });

  it("records the totals in the ledger row it wrote first, and begins nothing for a batch already there", async () => {
    const batch = header(0);
    const transaction = await BatchTransaction.begin(env.pool, batch, plain);
    await transaction?.upsert(["k"], ["5"]);
    await transaction?.commit({ keyCount: 1, deltaSum: 5n, resetCount: 0 });
    expect(await readLedger(env.pool)).toMatchObject([{ batch_id: batch.id, key_count: 1, delta_sum: "5" }]);

    expect(await BatchTransaction.begin(env.pool, batch, plain)).toBeNull();
    expect(await readCounters(env.pool)).toEqual(new Map([["k", 5n]]));
  });

  it("deletes the rows of reset keys before the batch's deltas, and records how many resets it applied", async () => {
    await env.pool.query(
      "INSERT INTO counters (key, value, updated_at) VALUES ('reset-then-counted', 100, now()), ('reset-only', 7, now()), ('kept', 3, now())",
    );
    const batch = header(0);
    const transaction = await BatchTransaction.begin(env.pool, batch, plain);
    await transaction?.deleteResets(["reset-then-counted", "reset-only", "never-counted"]);
    await transaction?.upsert(["reset-then-counted", "kept"], ["5", "1"]);
    await transaction?.commit({ keyCount: 2, deltaSum: 6n, resetCount: 3 });

    expect(await readCounters(env.pool)).toEqual(
      new Map([
        ["kept", 4n],
        ["reset-then-counted", 5n],
      ]),
    );
    expect(await readLedger(env.pool)).toMatchObject([{ batch_id: batch.id, reset_count: 3 }]);
  });

  it("records when the batch committed, not when its transaction began", async () => {
    const transaction = await BatchTransaction.begin(env.pool, header(0), plain);
    await transaction?.upsert(["k"], ["1"]);
    await sleep(300);
    const committing = Date.now();
    await transaction?.commit({ keyCount: 1, deltaSum: 1n, resetCount: 0 });

    const { rows } = await env.pool.query<{ committed_at: Date }>("SELECT committed_at FROM sync_batches");
    // Postgres and this process read the same clock; 50 ms allows for rounding, far below the 300 ms wait.
    expect(rows[0]?.committed_at.getTime()).toBeGreaterThan(committing - 50);
  });

  it("leaves nothing behind when rolled back", async () => {
    const transaction = await BatchTransaction.begin(env.pool, header(0), plain);
    await transaction?.upsert(["gone"], ["1"]);
    await transaction?.rollback();
    await transaction?.rollback();
    expect(await readCounters(env.pool)).toEqual(new Map());
    expect(await readLedger(env.pool)).toEqual([]);
  });
});
