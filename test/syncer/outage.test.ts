import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFinished } from "vitest";
import { migrate } from "../../lib/postgres/migrate.ts";
import { shardKeys } from "../../lib/redis/keyspace.ts";
import type { SyncStep } from "../../syncer/flush-context.ts";
import { type PostgresServer, startPostgres } from "../../tools/servers/postgres.ts";
import { waitFor } from "../harness/fixtures.ts";
import {
  addDeltas,
  createSyncer,
  drain,
  expectDelta,
  isDrained,
  openSyncerEnv,
  readCounters,
  readLedger,
  resetTables,
  type SyncerEnv,
} from "../support/syncer.ts";

// Postgres outages, on a private Postgres this file stops, kills and restarts (Redis is the shared one):
// while Postgres is away the batch waits in Redis, and once it is back it is applied exactly once.

let postgres: PostgresServer;
let env: SyncerEnv;

beforeAll(async () => {
  postgres = await startPostgres();
  env = await openSyncerEnv({ databaseUrl: postgres.url() });
  await migrate(env.pool);
});

afterAll(async () => {
  await env?.close();
  await postgres?.destroy();
});

beforeEach(async () => {
  // A test that failed half-way may have left the server down.
  await postgres.start();
  await resetTables(env.pool);
});

/** kill -9 of the whole server: the harness kills the postmaster and every backend, and waits for them. */
async function crashPostgres(): Promise<void> {
  await postgres.kill();
}

async function write(prefix: string, expected: Map<string, bigint>, round: number): Promise<void> {
  const writes: [string, number][] = [];
  for (let i = 0; i < 50; i++) writes.push([`k${i}`, (i % 3 === 0 ? -1 : 1) * (round * 100 + i)]);
  await addDeltas(env.redis, prefix, writes);
  for (const [key, delta] of writes) expectDelta(expected, key, delta);
}

async function newSyncer(prefix: string, onStep?: (step: SyncStep) => Promise<void>) {
  const pool = env.openPool();
  onTestFinished(async () => {
    if (!pool.ending) await pool.end();
  });
  return createSyncer({ redis: await env.openRedis(), pool, prefix, onStep });
}

describe("Postgres unavailable", () => {
  it("reports the shard as failed, keeps the batch in Redis, and applies it exactly once when Postgres is back", async () => {
    const prefix = env.newPrefix();
    const keys = shardKeys(prefix, 0);
    const expected = new Map<string, bigint>();
    const syncer = await newSyncer(prefix);
    await write(prefix, expected, 1);
    expect((await syncer.runCycle()).failures).toEqual([]);

    await postgres.stop();
    await write(prefix, expected, 2);
    const down = await syncer.runCycle();

    expect(down.failures).toEqual([{ shard: 0, error: expect.any(Error) }]);
    expect(down.outcomes).toEqual([]);
    const waiting = await env.redis.hget(keys.flushingMeta, "batch");
    expect(waiting).not.toBeNull();
    expect(await env.redis.hlen(keys.flushing)).toBe(50);

    // Writes keep coming, and cycles keep failing: the waiting batch is retried, never replaced.
    await write(prefix, expected, 3);
    expect((await syncer.runCycle()).failures).toHaveLength(1);
    expect(await env.redis.hget(keys.flushingMeta, "batch")).toBe(waiting);
    expect(await env.redis.hlen(keys.dirty)).toBe(50);

    await postgres.start();
    await drain(syncer, env.redis, prefix);

    expect(await readCounters(env.pool)).toEqual(expected);
    const ledger = await readLedger(env.pool);
    expect(ledger).toHaveLength(3);
    expect(ledger.filter((row) => row.batch_id === waiting)).toHaveLength(1);
  });

  it("survives its backend being terminated mid-transaction: the cycle fails cleanly, the batch is applied once", async () => {
    const prefix = env.newPrefix();
    const expected = new Map<string, bigint>();
    const terminated: number[] = [];
    const syncer = await newSyncer(prefix, async (step) => {
      if (step !== "before-commit" || terminated.length > 0) return;
      // What a fast shutdown, a failover or an operator's pg_terminate_backend() does: the backend sends
      // FATAL and hangs up while the syncer's client sits between two queries of its transaction.
      const { rows } = await env.pool.query<{ pid: number }>(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'",
      );
      terminated.push(...rows.map((row) => row.pid));
      await env.pool.query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", [terminated]);
      await waitFor(async () => {
        const { rowCount } = await env.pool.query("SELECT 1 FROM pg_stat_activity WHERE pid = ANY($1)", [
          terminated,
        ]);
        return rowCount === 0;
      });
    });
    await write(prefix, expected, 1);

    const report = await syncer.runCycle();

    expect(terminated).toHaveLength(1);
    expect(report.failures).toEqual([{ shard: 0, error: expect.any(Error) }]);
    expect(await readLedger(env.pool)).toEqual([]);
    expect(await readCounters(env.pool)).toEqual(new Map());

    await write(prefix, expected, 2);
    await drain(syncer, env.redis, prefix);

    expect(await readCounters(env.pool)).toEqual(expected);
    expect(await readLedger(env.pool)).toHaveLength(2);
  });

  /** A syncer whose onStep hook kill -9s Postgres (the postmaster and every backend) once, at `killAt`. */
  async function syncerKillingPostgresAt(prefix: string, killAt: SyncStep) {
    const state = { killed: false };
    const syncer = await newSyncer(prefix, async (step) => {
      if (step === killAt && !state.killed) {
        state.killed = true;
        await crashPostgres();
      }
    });
    return { syncer, state };
  }

  it("killed just before COMMIT: the transaction dies with it, and the batch is applied once after recovery", async () => {
    const prefix = env.newPrefix();
    const keys = shardKeys(prefix, 0);
    const expected = new Map<string, bigint>();
    const { syncer, state } = await syncerKillingPostgresAt(prefix, "before-commit");
    await write(prefix, expected, 1);

    const report = await syncer.runCycle();

    expect(state.killed).toBe(true);
    expect(report.failures).toEqual([{ shard: 0, error: expect.any(Error) }]);
    expect(await env.redis.hlen(keys.flushing)).toBe(50);

    await write(prefix, expected, 2);
    await postgres.start();
    await drain(syncer, env.redis, prefix);

    expect(await readCounters(env.pool)).toEqual(expected);
    expect(await readLedger(env.pool)).toHaveLength(2);
  });

  it("killed right after COMMIT: crash recovery keeps the committed batch, and nothing is applied twice", async () => {
    const prefix = env.newPrefix();
    const expected = new Map<string, bigint>();
    const { syncer, state } = await syncerKillingPostgresAt(prefix, "after-commit");
    await write(prefix, expected, 1);

    const report = await syncer.runCycle();

    // The commit was acknowledged, so the Redis side finishes the batch even though Postgres is gone now.
    expect(state.killed).toBe(true);
    expect(report.failures).toEqual([]);
    expect(await isDrained(env.redis, prefix)).toBe(true);

    await write(prefix, expected, 2);
    await postgres.start();
    await drain(syncer, env.redis, prefix);

    expect(await readCounters(env.pool)).toEqual(expected);
    expect(await readLedger(env.pool)).toHaveLength(2);
  });
});
