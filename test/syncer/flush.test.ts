import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it, onTestFinished, vi } from "vitest";
import { Acknowledgements, NO_REPLICAS } from "../../lib/redis/acknowledgements.ts";
import { Keyspace, type ShardKeys, shardKeys } from "../../lib/redis/keyspace.ts";
import { Masters } from "../../lib/redis/masters.ts";
import { Scripts } from "../../lib/redis/scripts.ts";
import { MAX_KEY_BYTES } from "../../lib/settings.ts";
import { BatchTransaction } from "../../syncer/batch-transaction.ts";
import type { FlushContext } from "../../syncer/flush-context.ts";
import { flushShardOnce } from "../../syncer/flush-shard.ts";
import { RedisWentBackError, SwapUnconfirmedError } from "../../syncer/protocol-errors.ts";
import { ShardProgress } from "../../syncer/shard-progress.ts";
import type { Syncer } from "../../syncer/syncer.ts";
import { waitFor } from "../harness/fixtures.ts";
import { captureLogger } from "../support/logger.ts";
import {
  addDeltas,
  createSyncer,
  expectDelta,
  isDrained,
  nonZero,
  readCounters,
  readLedger,
  useSyncerEnv,
} from "../support/syncer.ts";

// One batch at a time through the protocol, on the shared Redis and this file's own database.

const INT64_MAX = 2n ** 63n - 1n;
const INT64_MIN = -(2n ** 63n);
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

const env = useSyncerEnv();

function flushContext(overrides: Partial<FlushContext> = {}): FlushContext {
  // The scripts' keyspace names only the lease, which flushing never touches; the shard comes with each call.
  const scripts = new Scripts(env.redis, new Keyspace("flush", 1));
  return { scripts, pool: env.pool, scanCount: 1_000, progress: new ShardProgress(env.pool), ...overrides };
}

/** Progress that knows Postgres has committed the shard's batch `seq`. */
function committedUpTo(shard: number, seq: bigint): ShardProgress {
  const progress = new ShardProgress(env.pool);
  progress.committed(shard, seq);
  return progress;
}

/** One batch of the shard through the protocol, by a syncer that dies after its commit, before the finish. */
function crashAfterCommit(keys: ShardKeys): Promise<unknown> {
  return flushShardOnce(
    flushContext({
      onStep: async (step) => {
        if (step === "after-commit") throw new Error("crash before the finish");
      },
    }),
    keys,
  ).catch(() => undefined);
}

async function readSyncState(shard: number) {
  const { rows } = await env.pool.query<{ synced_through: Date; last_seq: bigint }>(
    "SELECT synced_through, last_seq FROM sync_state WHERE shard = $1",
    [shard],
  );
  return rows[0];
}

describe("flushShardOnce", () => {
  it("applies exact sums (beyond 2^53, negative, awkward keys), skips keys that net to zero", async () => {
    const prefix = env.newPrefix();
    const keys = shardKeys(prefix, 0);
    const expected = new Map<string, bigint>();
    const writes: [string, bigint][] = [
      // Three increments of 2^53-1 sum to a value a double cannot hold; only int64 text keeps it exact.
      ["big", MAX_SAFE],
      ["big", MAX_SAFE],
      ["big", MAX_SAFE],
      ["big", 2n],
      ["negative", -5n],
      ["negative", -(MAX_SAFE - 1n)],
      ["mixed", 10n],
      ["mixed", -3n],
      ["cancels", 41n],
      ["cancels", -41n],
      // Text that array literals must escape: quotes, backslashes, braces, commas, NULL, unicode.
      ['q"u\\o{t,e}', 1n],
      ["NULL", 2n],
      ["ключ 🔑", 3n],
    ];
    for (const [key, delta] of writes) {
      await addDeltas(env.redis, prefix, [[key, delta]]);
      expectDelta(expected, key, delta);
    }

    const outcome = await flushShardOnce(flushContext(), keys);

    const rows = await readCounters(env.pool);
    expect(rows).toEqual(nonZero(expected));
    expect(rows.get("big")).toBe(3n * MAX_SAFE + 2n);
    expect(rows.has("cancels")).toBe(false);
    expect(outcome).toMatchObject({ kind: "batch", shard: 0, keys: 6, applied: true, resumed: false });
    expect(await isDrained(env.redis, prefix)).toBe(true);
    expect(await env.redis.exists(keys.flushingMeta)).toBe(0);
  });

  it("records the batch in the ledger and advances sync_state, one ledger row per batch", async () => {
    const prefix = env.newPrefix();
    const keys = shardKeys(prefix, 0);
    const ctx = flushContext();
    await addDeltas(env.redis, prefix, [
      ["a", 5],
      ["b", -2],
    ]);

    const first = await flushShardOnce(ctx, keys);
    await addDeltas(env.redis, prefix, [
      ["a", 1],
      ["c", 100],
    ]);
    const second = await flushShardOnce(ctx, keys);

    if (first.kind !== "batch" || second.kind !== "batch") throw new Error("expected two batches");
    expect(await readCounters(env.pool)).toEqual(
      new Map([
        ["a", 6n],
        ["b", -2n],
        ["c", 100n],
      ]),
    );
    expect(await readLedger(env.pool)).toEqual([
      {
        batch_id: first.batchId,
        shard: 0,
        seq: 1n,
        swapped_at: first.swappedAt,
        key_count: 2,
        delta_sum: "3",
        reset_count: 0,
      },
      {
        batch_id: second.batchId,
        shard: 0,
        seq: 2n,
        swapped_at: second.swappedAt,
        key_count: 2,
        delta_sum: "101",
        reset_count: 0,
      },
    ]);
    expect(await readSyncState(0)).toEqual({ synced_through: second.swappedAt, last_seq: 2n });
    // The next swap must not reuse a committed seq even if Redis lost its counter.
    expect(ctx.progress.nextSeqFloor(0)).toBe(3n);
  });

  it("commits a batch whose keys all cancel out, without creating rows", async () => {
    const prefix = env.newPrefix();
    await addDeltas(env.redis, prefix, [
      ["up-down", 7],
      ["up-down", -7],
    ]);

    const outcome = await flushShardOnce(flushContext(), shardKeys(prefix, 0));

    expect(outcome).toMatchObject({ kind: "batch", keys: 0, applied: true });
    expect(await readCounters(env.pool)).toEqual(new Map());
    expect(await readLedger(env.pool)).toMatchObject([{ key_count: 0, delta_sum: "0" }]);
    expect(await isDrained(env.redis, prefix)).toBe(true);
  });

  it("marks the shard idle when nothing is pending: synced_through advances, last_seq stays", async () => {
    const prefix = env.newPrefix();
    const keys = shardKeys(prefix, 0);
    const ctx = flushContext();
    await addDeltas(env.redis, prefix, [["a", 1]]);
    const batch = await flushShardOnce(ctx, keys);
    if (batch.kind !== "batch") throw new Error("expected a batch");
    const beforeIdle = new Date();

    const outcome = await flushShardOnce(ctx, keys);

    expect(outcome).toEqual({ kind: "idle", shard: 0, observedAt: expect.any(Date) });
    const state = await readSyncState(0);
    expect(state?.last_seq).toBe(1n);
    expect(state?.synced_through.getTime()).toBeGreaterThanOrEqual(beforeIdle.getTime());
    expect(await readLedger(env.pool)).toHaveLength(1);
  });

  it("reads a hash far larger than one HSCAN page completely", async () => {
    const prefix = env.newPrefix();
    const expected = new Map<string, bigint>();
    const writes: [string, number][] = [];
    for (let i = 0; i < 5_000; i++) writes.push([`key:${i}`, i + 1]);
    await addDeltas(env.redis, prefix, writes);
    for (const [key, delta] of writes) expectDelta(expected, key, delta);
    // Spies that call through: they only count pages and statements, to prove both really were chunked.
    const hscan = vi.spyOn(env.redis, "hscan");
    const upsert = vi.spyOn(BatchTransaction.prototype, "upsert");

    const outcome = await flushShardOnce(
      flushContext({ scanCount: 100, statementRows: { minRows: 700, maxRows: 900 } }),
      shardKeys(prefix, 0),
    );

    expect(outcome).toMatchObject({ kind: "batch", keys: 5_000, applied: true });
    expect(hscan.mock.calls.length).toBeGreaterThan(10);
    expect(upsert.mock.calls.map(([keys]) => keys.length).reduce((a, b) => a + b)).toBe(5_000);
    expect(Math.max(...upsert.mock.calls.map(([keys]) => keys.length))).toBeLessThanOrEqual(900);
    expect(await readCounters(env.pool)).toEqual(expected);
    expect(await readLedger(env.pool)).toMatchObject([
      { key_count: 5_000, delta_sum: String((5_000 * 5_001) / 2) },
    ]);
  });

  it("rolls back a batch whose read missed a key (the server changed under the scan) and reads it again next time", async () => {
    const prefix = env.newPrefix();
    const keys = shardKeys(prefix, 0);
    await addDeltas(env.redis, prefix, [
      ["a", 1],
      ["b", 2],
    ]);
    // A key the scan has passed by when the hook runs: what a cursor continued on another server misses.
    const missed = flushContext({
      onStep: async (step) => {
        if (step === "during-read") await env.redis.hset(keys.flushing, "c", "3");
      },
    });

    await expect(flushShardOnce(missed, keys)).rejects.toThrow(/found 2 of its 3 keys/);
    expect(await readLedger(env.pool)).toEqual([]);
    expect(await readCounters(env.pool)).toEqual(new Map());

    const outcome = await flushShardOnce(flushContext(), keys);
    expect(outcome).toMatchObject({ kind: "batch", applied: true, resumed: true, keys: 3 });
    expect(await readCounters(env.pool)).toEqual(
      new Map([
        ["a", 1n],
        ["b", 2n],
        ["c", 3n],
      ]),
    );
  });

  it("stops, touching nothing, when Redis' batch sequence is below what Postgres committed", async () => {
    const prefix = env.newPrefix();
    const keys = shardKeys(prefix, 0);
    await addDeltas(env.redis, prefix, [["a", 1]]);
    await env.redis.set(keys.seq, "3");

    // Postgres committed batch 7 of this shard: a Redis at 3 lost the swaps of batches 4 to 7.
    const flush = flushShardOnce(flushContext({ progress: committedUpTo(0, 7n) }), keys);

    await expect(flush).rejects.toBeInstanceOf(RedisWentBackError);
    await expect(flush).rejects.toThrow(
      "Redis went back in time on shard 0: its batch sequence in Redis is 3, but Postgres has committed batch 7",
    );
    expect(await env.redis.hgetall(keys.dirty)).toEqual({ a: "1" });
    expect(await env.redis.exists(keys.flushing)).toBe(0);
    expect(await readLedger(env.pool)).toEqual([]);
  });

  it("stops when a leftover batch the ledger applied comes back with other contents, and keeps it for an operator", async () => {
    const prefix = env.newPrefix();
    const keys = shardKeys(prefix, 0);
    await addDeltas(env.redis, prefix, [
      ["a", 1],
      ["b", 2],
    ]);
    // Applied and committed, but its finish never happened: then Redis went back to a state of the batch
    // with a key less (a replica that had not received every increment before the swap).
    await crashAfterCommit(keys);
    await env.redis.hdel(keys.flushing, "b");

    const flush = flushShardOnce(flushContext(), keys);

    await expect(flush).rejects.toBeInstanceOf(RedisWentBackError);
    await expect(flush).rejects.toThrow(
      /is back in Redis with 1 keys summing to 1 and 0 resets, but the ledger applied it with 2 keys summing to 3 and 0 resets/,
    );
    expect(await env.redis.hgetall(keys.flushing)).toEqual({ a: "1" });
    expect(await readCounters(env.pool)).toEqual(
      new Map([
        ["a", 1n],
        ["b", 2n],
      ]),
    );
  });

  it("applies a batch's resets before its deltas: a reset key counts from zero, a key reset alone loses its row", async () => {
    const prefix = env.newPrefix();
    const keys = shardKeys(prefix, 0);
    await env.pool.query(
      "INSERT INTO counters (key, value, updated_at) VALUES ('counted-after', 100, now()), ('reset-alone', 7, now()), ('kept', 1, now())",
    );
    await addDeltas(env.redis, prefix, [
      ["counted-after", 50],
      ["kept", 2],
    ]);
    await new Scripts(env.redis, new Keyspace(prefix, 1)).reset("counted-after");
    await new Scripts(env.redis, new Keyspace(prefix, 1)).reset("reset-alone");
    await addDeltas(env.redis, prefix, [["counted-after", 5]]);

    const outcome = await flushShardOnce(flushContext(), keys);

    expect(outcome).toMatchObject({ kind: "batch", applied: true, keys: 2 });
    expect(await readCounters(env.pool)).toEqual(
      new Map([
        ["counted-after", 5n],
        ["kept", 3n],
      ]),
    );
    expect(await readLedger(env.pool)).toMatchObject([{ key_count: 2, delta_sum: "7", reset_count: 2 }]);
    expect(await isDrained(env.redis, prefix)).toBe(true);
  });

  it("applies a leftover batch's resets once: a crash after the commit does not reset what came after", async () => {
    const prefix = env.newPrefix();
    const keys = shardKeys(prefix, 0);
    const scripts = new Scripts(env.redis, new Keyspace(prefix, 1));
    await env.pool.query("INSERT INTO counters (key, value, updated_at) VALUES ('r', 100, now())");
    await scripts.reset("r");
    await addDeltas(env.redis, prefix, [["r", 4]]);
    await crashAfterCommit(keys);
    // Counted after the reset's batch, and applied by a later one.
    await addDeltas(env.redis, prefix, [["r", 10]]);

    const leftover = await flushShardOnce(flushContext(), keys);
    expect(leftover).toMatchObject({ kind: "batch", applied: false, resumed: true });
    await flushShardOnce(flushContext(), keys);

    expect(await readCounters(env.pool)).toEqual(new Map([["r", 14n]]));
    expect(await isDrained(env.redis, prefix)).toBe(true);
  });

  it("cleans up a leftover batch the ledger applied when it comes back the same", async () => {
    const prefix = env.newPrefix();
    const keys = shardKeys(prefix, 0);
    await addDeltas(env.redis, prefix, [["a", 5]]);
    await crashAfterCommit(keys);

    const outcome = await flushShardOnce(flushContext(), keys);

    expect(outcome).toMatchObject({ kind: "batch", applied: false, resumed: true });
    expect(await env.redis.exists(keys.flushing)).toBe(0);
    expect(await readCounters(env.pool)).toEqual(new Map([["a", 5n]]));
  });

  it("applies nothing while the replicas do not confirm the swap, and the batch waits in Redis", async () => {
    const prefix = env.newPrefix();
    const keys = shardKeys(prefix, 0);
    await addDeltas(env.redis, prefix, [["a", 5]]);
    // The shared Redis has no replica: asked to wait for one, the swap is never confirmed.
    const scripts = new Scripts(
      env.redis,
      new Keyspace("flush", 1),
      new Acknowledgements({
        masters: new Masters(env.redis),
        policy: { ...NO_REPLICAS, required: () => 1 },
        timeoutMs: 50,
        aof: false,
      }),
    );

    const flush = flushShardOnce(flushContext({ scripts }), keys);

    await expect(flush).rejects.toBeInstanceOf(SwapUnconfirmedError);
    expect(await env.redis.hgetall(keys.flushing)).toEqual({ a: "5" });
    expect(await readLedger(env.pool)).toEqual([]);
    // Once confirmed (here: no replica asked for), the same batch is resumed and applied.
    expect(await flushShardOnce(flushContext(), keys)).toMatchObject({ applied: true, resumed: true });
  });

  it("rolls back the transaction it opened when the first read fails, so the next flush is not locked out", async () => {
    const prefix = env.newPrefix();
    await addDeltas(env.redis, prefix, [["k", 4]]);
    vi.spyOn(env.redis, "hscan").mockRejectedValueOnce(new Error("connection lost"));

    await expect(flushShardOnce(flushContext(), shardKeys(prefix, 0))).rejects.toThrow("connection lost");
    // The batch stayed in Redis; a transaction left open would hold the apply lock and this would hang.
    const outcome = await flushShardOnce(flushContext(), shardKeys(prefix, 0));

    expect(outcome).toMatchObject({ kind: "batch", applied: true, resumed: true, keys: 1 });
    expect(await readCounters(env.pool)).toEqual(new Map([["k", 4n]]));
  });

  it("sets aside a key out of range in any statement of a batch cut into several", async () => {
    const prefix = env.newPrefix();
    await env.pool.query("INSERT INTO counters (key, value, updated_at) VALUES ('edge', $1, now())", [
      (INT64_MAX - 1n).toString(),
    ]);
    const writes: [string, number][] = Array.from({ length: 2_000 }, (_, i) => [`many:${i}`, 1]);
    writes.push(["edge", 2]);
    await addDeltas(env.redis, prefix, writes);

    const outcome = await flushShardOnce(
      flushContext({ scanCount: 100, statementRows: { minRows: 300, maxRows: 400 } }),
      shardKeys(prefix, 0),
    );

    expect(outcome).toMatchObject({
      kind: "batch",
      applied: true,
      quarantined: [{ key: "edge", delta: "2", reason: "bigint out of range (SQLSTATE 22003)" }],
    });
    const rows = await readCounters(env.pool);
    expect(rows.get("edge")).toBe(INT64_MAX - 1n);
    expect([...rows.keys()].filter((key) => key.startsWith("many:"))).toHaveLength(2_000);
    expect(await isDrained(env.redis, prefix)).toBe(true);
  });

  it("sets aside a key whose total would leave bigint, applies the others, and leaves nothing stuck", async () => {
    const prefix = env.newPrefix();
    await env.pool.query(
      "INSERT INTO counters (key, value, updated_at) VALUES ($1, $2, now()), ($3, $4, now())",
      ["near-max", (INT64_MAX - 5n).toString(), "near-min", (INT64_MIN + 5n).toString()],
    );
    await addDeltas(env.redis, prefix, [
      ["near-max", 10],
      ["near-min", -6],
      ["ok", 42],
      ["ok-too", -1],
    ]);

    const outcome = await flushShardOnce(flushContext(), shardKeys(prefix, 0));

    if (outcome.kind !== "batch") throw new Error("expected a batch");
    expect(outcome.applied).toBe(true);
    expect([...outcome.quarantined].sort((a, b) => a.key.localeCompare(b.key))).toEqual([
      { key: "near-max", delta: "10", reason: "bigint out of range (SQLSTATE 22003)" },
      { key: "near-min", delta: "-6", reason: "bigint out of range (SQLSTATE 22003)" },
    ]);
    expect(await readCounters(env.pool)).toEqual(
      new Map([
        ["near-max", INT64_MAX - 5n],
        ["near-min", INT64_MIN + 5n],
        ["ok", 42n],
        ["ok-too", -1n],
      ]),
    );
    const { rows } = await env.pool.query<{ batch_id: string; key: string; delta: bigint; reason: string }>(
      "SELECT batch_id, key, delta, reason FROM quarantined_deltas ORDER BY key",
    );
    expect(rows).toEqual([
      { batch_id: outcome.batchId, key: "near-max", delta: 10n, reason: expect.stringContaining("bigint") },
      { batch_id: outcome.batchId, key: "near-min", delta: -6n, reason: expect.stringContaining("bigint") },
    ]);
    expect(await isDrained(env.redis, prefix)).toBe(true);
    // Set aside, not lost: the ledger's delta_sum still accounts for every delta of the batch.
    expect(await readLedger(env.pool)).toMatchObject([{ key_count: 4, delta_sum: "45" }]);
  });
});

describe("flushShardOnce: keys Postgres cannot index", () => {
  it("applies a key at MAX_KEY_BYTES, and sets aside a longer one with its delta while the rest of the batch is applied", async () => {
    const prefix = env.newPrefix();
    // Random bytes do not compress, so the index entry is as long as the key (a repeated letter would fit).
    const noise = (bytes: number) => randomBytes(bytes / 2).toString("hex");
    const widest = noise(MAX_KEY_BYTES);
    const tooLong = noise(3_006);
    const writes: [string, number][] = Array.from({ length: 55 }, (_, i) => [`neighbour:${i}`, 1]);
    writes.push([widest, 3], [tooLong, 7]);
    await addDeltas(env.redis, prefix, writes);

    const outcome = await flushShardOnce(flushContext(), shardKeys(prefix, 0));

    if (outcome.kind !== "batch") throw new Error("expected a batch");
    expect(outcome.quarantined).toEqual([
      { key: tooLong, delta: "7", reason: expect.stringContaining("SQLSTATE 54000") },
    ]);
    const rows = await readCounters(env.pool);
    expect(rows.get(widest)).toBe(3n);
    expect(rows.has(tooLong)).toBe(false);
    expect([...rows.keys()].filter((key) => key.startsWith("neighbour:"))).toHaveLength(55);
    const { rows: setAside } = await env.pool.query<{ key: string; delta: bigint; reason: string }>(
      "SELECT key, delta, reason FROM quarantined_deltas WHERE key = $1",
      [tooLong],
    );
    expect(setAside).toEqual([
      { key: tooLong, delta: 7n, reason: expect.stringContaining("index row size") },
    ]);
    expect(await isDrained(env.redis, prefix)).toBe(true);
  });
});

describe("Syncer.runCycle", () => {
  it("counts a shard as synced as soon as it commits, not when the whole cycle ends", async () => {
    const prefix = env.newPrefix();
    let cycle = 1;
    let shard1SwappedAfter = 0;
    let measured: { now: number; stalenessMs: number } | undefined;
    const syncer: Syncer = createSyncer({
      redis: env.redis,
      pool: env.pool,
      prefix,
      shards: 2,
      // One shard after the other, so that shard 0 has committed when shard 1 is reached.
      concurrency: 1,
      onStep: async (step, shard) => {
        if (step !== "before-swap" || shard !== 1) return;
        if (cycle === 1) {
          // Shard 1 is synced through a moment well after shard 0 in the first cycle.
          await sleep(400);
          shard1SwappedAfter = Date.now();
        } else {
          // In the second, shard 0 has just committed: only shard 1 can be the oldest now.
          measured = { now: Date.now(), stalenessMs: syncer.stalenessMs() };
        }
      },
    });
    await syncer.runCycle();
    cycle = 2;
    await syncer.runCycle();

    if (measured === undefined) throw new Error("shard 1 was not reached in the second cycle");
    // Counted from the end of the first cycle, it would be ~400 ms more: shard 0's old position.
    expect(measured.stalenessMs).toBeLessThanOrEqual(measured.now - shard1SwappedAfter);
  });

  it("applies SYNC_CONCURRENCY shards at once, each in its own transaction, and all of them", async () => {
    const prefix = env.newPrefix();
    let open = 0;
    let mostOpen = 0;
    const syncer = createSyncer({
      redis: env.redis,
      pool: env.pool,
      prefix,
      shards: 4,
      concurrency: 2,
      onStep: async (step) => {
        if (step !== "before-commit") return;
        open += 1;
        mostOpen = Math.max(mostOpen, open);
        await sleep(200);
        open -= 1;
      },
    });
    for (const shard of [0, 1, 2, 3]) await addDeltas(env.redis, prefix, [[`c${shard}`, shard + 1]], shard);
    const report = await syncer.runCycle();
    expect(mostOpen).toBe(2);
    expect(report.outcomes.map((outcome) => [outcome.shard, outcome.kind])).toEqual([
      [0, "batch"],
      [1, "batch"],
      [2, "batch"],
      [3, "batch"],
    ]);
    expect(await readCounters(env.pool)).toEqual(
      new Map([
        ["c0", 1n],
        ["c1", 2n],
        ["c2", 3n],
        ["c3", 4n],
      ]),
    );
  });

  it("stops a shard whose Redis went back, with one error line however many cycles find it so, until it is set right", async () => {
    const prefix = env.newPrefix();
    const keys = shardKeys(prefix, 0);
    const { logger, lines } = captureLogger();
    const syncer = createSyncer({ redis: env.redis, pool: env.pool, prefix, logger });
    // Batch 1 applied and finished, batch 2 applied but left unfinished; then Redis goes back to before
    // batch 2's swap was counted: its counter says 1 while Postgres has committed 2.
    await addDeltas(env.redis, prefix, [["a", 1]]);
    await syncer.runCycle();
    await addDeltas(env.redis, prefix, [["a", 2]]);
    await flushShardOnce(
      flushContext({
        progress: committedUpTo(0, 1n),
        onStep: async (step) => {
          if (step === "after-commit") throw new Error("crash before the finish");
        },
      }),
      keys,
    ).catch(() => undefined);
    await env.redis.set(keys.seq, "0");
    await addDeltas(env.redis, prefix, [["a", 4]]);

    // The leftover is finished (the ledger has it, unchanged), then the next swap finds the counter behind.
    const first = await syncer.runCycle();
    expect(first.outcomes).toMatchObject([{ kind: "batch", applied: false, resumed: true }]);
    expect(first.failures).toMatchObject([{ shard: 0, error: expect.any(RedisWentBackError) }]);
    await syncer.runCycle();
    await syncer.runCycle();

    const stopped = lines.filter((line) => line.msg === "shard stopped: Redis went back in time");
    expect(stopped).toMatchObject([
      { level: "error", shard: 0, runbook: "docs/operations.md#redis-went-back-in-time" },
    ]);
    expect(lines.some((line) => line.msg === "shard syncs again")).toBe(false);
    expect(await readCounters(env.pool)).toEqual(new Map([["a", 3n]]));

    // The runbook's "keep what Redis holds": the counter set to Postgres' last batch.
    await env.redis.set(keys.seq, "2");
    await syncer.runCycle();
    expect(lines.filter((line) => line.msg === "shard syncs again")).toMatchObject([{ shard: 0 }]);
    expect(await readCounters(env.pool)).toEqual(new Map([["a", 7n]]));
  });

  it("says once when cycles take longer than the interval, and when they fit again", async () => {
    const prefix = env.newPrefix();
    const { logger, lines } = captureLogger();
    let slow = true;
    const syncer = createSyncer({
      redis: await env.openRedis(),
      pool: env.openPool(),
      prefix,
      intervalMs: 100,
      logger,
      onStep: async (step) => {
        if (step === "before-swap" && slow) await sleep(150);
      },
    });
    onTestFinished(() => syncer.stop());
    syncer.start();
    const overrun = (line: { msg: string }) =>
      line.msg.startsWith("cycles take longer than SYNC_INTERVAL_MS");
    await waitFor(async () => lines.some(overrun), { message: "no line about overrunning cycles" });
    await sleep(500);
    // Every cycle overran meanwhile; one line, a reminder only after 30 s.
    expect(lines.filter(overrun)).toHaveLength(1);
    expect(lines.find(overrun)).toMatchObject({
      level: "warn",
      reason: expect.stringMatching(/took \d+ ms/),
    });
    slow = false;
    await waitFor(async () => lines.some((line) => line.msg.endsWith(": recovered") && overrun(line)), {
      message: "no line when the cycles fit again",
    });
  });

  it("flushes every shard in one cycle and reports each outcome", async () => {
    const prefix = env.newPrefix();
    const syncer = createSyncer({ redis: env.redis, pool: env.pool, prefix, shards: 3 });
    const expected = new Map<string, bigint>();
    for (const shard of [0, 2]) {
      const writes: [string, number][] = [
        [`s${shard}:a`, shard + 1],
        [`s${shard}:b`, -(shard + 10)],
      ];
      await addDeltas(env.redis, prefix, writes, shard);
      for (const [key, delta] of writes) expectDelta(expected, key, delta);
    }

    const report = await syncer.runCycle();

    expect(report.failures).toEqual([]);
    expect(report.outcomes.map((outcome) => [outcome.shard, outcome.kind])).toEqual([
      [0, "batch"],
      [1, "idle"],
      [2, "batch"],
    ]);
    expect(await readCounters(env.pool)).toEqual(expected);
    expect(await isDrained(env.redis, prefix, 3)).toBe(true);
    const { rows } = await env.pool.query<{ shard: number; last_seq: bigint }>(
      "SELECT shard, last_seq FROM sync_state ORDER BY shard",
    );
    expect(rows).toEqual([
      { shard: 0, last_seq: 1n },
      { shard: 1, last_seq: 0n },
      { shard: 2, last_seq: 1n },
    ]);
  });

  it("continues the seq after the last committed one, even when Redis lost its counter", async () => {
    const prefix = env.newPrefix();
    await env.pool.query("INSERT INTO sync_state (shard, synced_through, last_seq) VALUES (0, now(), 41)");
    const syncer = createSyncer({ redis: env.redis, pool: env.pool, prefix });
    await addDeltas(env.redis, prefix, [["a", 1]]);

    const report = await syncer.runCycle();

    expect(report.outcomes).toMatchObject([{ kind: "batch", seq: 42n, applied: true }]);
    expect(await readLedger(env.pool)).toMatchObject([{ seq: 42n }]);
  });
});
