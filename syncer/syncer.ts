import { EventEmitter } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import type pg from "pg";
import { FailureStreak } from "../lib/failure-streak.ts";
import type { Logger } from "../lib/logger.ts";
import { isPostgresUnreachable } from "../lib/postgres/unreachable.ts";
import type { Acknowledgements } from "../lib/redis/acknowledgements.ts";
import type { RedisClient } from "../lib/redis/client.ts";
import { isRedisUnreachable } from "../lib/redis/connection.ts";
import type { Keyspace, ShardKeys } from "../lib/redis/keyspace.ts";
import { Scripts } from "../lib/redis/scripts.ts";
import { pruneLedger, readSyncState } from "./apply.ts";
import type { Batch } from "./batch.ts";
import {
  type BatchOutcome,
  flushShardOnce,
  RedisWentBackError,
  type StepHook,
  SwapUnconfirmedError,
} from "./flush-shard.ts";
import { pruneIdempotencyIndexes } from "./idempotency-records.ts";
import { ShardLeases } from "./shard-leases.ts";

export interface SyncerOptions {
  redis: RedisClient;
  /** How swaps are confirmed by the replicas before their batches are applied; none waited for if unset. */
  acknowledgements?: Acknowledgements;
  pool: pg.Pool;
  logger: Logger;
  keyspace: Keyspace;
  intervalMs: number;
  /** Shards applied at once; shards are key-disjoint, so their transactions share no row. */
  concurrency: number;
  scanCount: number;
  leaseTtlMs: number;
  /** Where Postgres is, for log lines (e.g. DATABASE_URL with its password masked). */
  postgresLocation?: string;
  /** Fault injection: called at every protocol step (tests only). */
  onStep?: StepHook;
  /**
   * Ledger rows older than this are pruned (hourly, after a cycle in which every shard synced) and batches
   * older than this are refused. Undefined: the ledger is kept forever.
   */
  ledgerRetentionMs?: number;
}

const PRUNE_EVERY_MS = 3_600_000;

/**
 * What a Syncer tells its observers (activity, metrics), through `on` as any EventEmitter. Listeners run on
 * the cycle's path: they must return at once (queue any I/O, do not await it). One that throws is logged
 * and affects neither the cycle nor the other listeners.
 * - "cycle": every cycle's report, at its end.
 * - "batch-applied": right after this syncer committed a batch, with its keys and deltas (by reference: a
 *   listener must not mutate them). Not for a batch the ledger already had.
 */
export interface SyncerEvents {
  cycle: [report: CycleReport];
  "batch-applied": [batch: Batch];
}

// The SPEC's bound: Postgres is never more than 10 s behind while it is reachable.
export const STALENESS_WARNING_S = 10;

export interface CycleReport {
  startedAt: Date;
  durationMs: number;
  outcomes: BatchOutcome[];
  /** Shards whose flush failed this cycle; their batch stays in Redis and is retried next cycle. */
  failures: { shard: number; error: unknown }[];
  /** Idempotency-Key records held over the cycle's shards; undefined when Redis could not be asked. */
  idempotencyRecords: number | undefined;
  /** The shards the cycle covered. */
  shards: number[];
}

/**
 * The syncer: while it holds the lease, every `intervalMs` (fixed rate: a cycle's start does not drift by
 * its duration; a cycle that overruns is followed at once by the next) it flushes every shard.
 */
export class Syncer extends EventEmitter<SyncerEvents> {
  readonly #options: SyncerOptions;
  readonly #leases: ShardLeases;
  /** Shards being flushed right now: their leases are not given up mid-batch. */
  readonly #flushing = new Set<number>();
  readonly #shardKeys: readonly ShardKeys[];
  readonly #scripts: Scripts;
  readonly #stop = new AbortController();
  #minSeq = new Map<number, bigint>();
  /** Per shard, epoch ms up to which Postgres holds every accepted increment, as far as we know. */
  readonly #syncedThrough = new Map<number, number>();
  #syncStateLoaded = false;
  #lastPruneAt = Number.NEGATIVE_INFINITY;
  readonly #startedAt = Date.now();
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #lastReport: CycleReport | undefined;
  readonly #postgresUnreachable: FailureStreak;
  readonly #overruns: FailureStreak;
  readonly #unconfirmedSwaps: FailureStreak;
  /** Shards not synced because Redis went back in time on them, with why. */
  readonly #stopped = new Map<number, string>();

  constructor(options: SyncerOptions) {
    super();
    this.#options = options;
    this.#shardKeys = options.keyspace.shards;
    this.#scripts = new Scripts(options.redis, options.keyspace, options.acknowledgements);
    this.#postgresUnreachable = new FailureStreak(
      options.logger,
      `cannot reach Postgres${options.postgresLocation ? ` at ${options.postgresLocation}` : ""}: batches wait in Redis and are retried every cycle`,
    );
    this.#overruns = new FailureStreak(
      options.logger,
      "cycles take longer than SYNC_INTERVAL_MS: Postgres is not keeping up with the distinct keys per cycle and staleness grows (docs/scaling.md, the next bottleneck)",
    );
    this.#unconfirmedSwaps = new FailureStreak(
      options.logger,
      "the replicas do not confirm the swaps within REDIS_WAIT_TIMEOUT_MS: batches wait in Redis until they do",
    );
    const claimFailures = new FailureStreak(options.logger, "cannot claim or renew the shards' leases");
    this.#leases = new ShardLeases({
      scripts: this.#scripts,
      shards: this.#shardKeys,
      ttlMs: options.leaseTtlMs,
      isBusy: (shard) => this.#flushing.has(shard),
      // A Redis that cannot be reached is the connection's to report (lib/redis/connection.ts); an error
      // Redis answered (out of memory, a script refused) is the lease's.
      onClaimError: (error) => {
        if (error instanceof Error && error.name === "ReplyError") claimFailures.failed(error);
      },
      onClaimAnswered: () => claimFailures.succeeded(),
    });
    this.#leases.on("acquired", (shards) => {
      options.logger.info({ holder: this.#leases.holderId, shards }, "took shards");
      // Another syncer may have synced them up to a later point than this one knows.
      this.#syncStateLoaded = false;
      // Synced at once: the syncer that had them may have died just before its cycle was due.
      this.#wake?.();
    });
    this.#leases.on("released", (shards) => {
      options.logger.info({ holder: this.#leases.holderId, shards }, "released shards");
    });
    this.#leases.on("lost", (shards) => {
      // Its renewals failed (Redis out of reach, a long pause): another syncer may be applying them now.
      options.logger.warn({ holder: this.#leases.holderId, shards }, "lost shards");
    });
  }

  /** The shards this syncer holds the leases of, and so applies. */
  get heldShards(): number[] {
    return this.#leases.held().map((shard) => shard.shard);
  }

  /** The shards this syncer holds that it does not sync because Redis went back in time on them. */
  get stoppedShards(): number[] {
    return this.heldShards.filter((shard) => this.#stopped.has(shard));
  }

  get lastReport(): CycleReport | undefined {
    return this.#lastReport;
  }

  start(): void {
    if (this.#loop) throw new Error("syncer already started");
    this.#leases.start();
    this.#loop = this.#run();
  }

  /**
   * Graceful stop: no new cycle starts, the one under way finishes, then one last cycle flushes what was
   * accepted until now in the shards still held, and their leases are released for the other syncers.
   */
  async stop(): Promise<void> {
    this.#stop.abort();
    this.#wake?.();
    await this.#loop;
    const held = this.#leases.held();
    if (held.length > 0) await this.runCycle(held, { whileHeld: true });
    await this.#leases.release();
  }

  /**
   * One pass over `shards` (every shard unless told); a failing shard is reported and does not hold up the
   * others. `whileHeld`: the running syncer's cycles skip a shard whose lease it gave up or lost since the
   * cycle began, rather than work beside its new holder.
   */
  async runCycle(
    shards: readonly ShardKeys[] = this.#shardKeys,
    { whileHeld = false }: { whileHeld?: boolean } = {},
  ): Promise<CycleReport> {
    const startedAt = new Date();
    const began = performance.now();
    const outcomes: BatchOutcome[] = [];
    const failures: CycleReport["failures"] = [];
    if (!this.#syncStateLoaded) await this.#loadSyncState();
    const ctx = {
      ...this.#options,
      scripts: this.#scripts,
      onBatchApplied: (batch: Batch) => this.#tell("batch-applied", batch),
      minSeq: this.#minSeq,
      maxBatchAgeMs: this.#options.ledgerRetentionMs,
    };
    // Staleness moves as each shard commits, not at the end of the cycle: a later shard's work does not
    // make an earlier one's data any older.
    const record = (outcome: BatchOutcome) => {
      outcomes.push(outcome);
      if (outcome.kind === "idle") this.#advance(outcome.shard, outcome.observedAt);
      if (outcome.kind === "batch") this.#advance(outcome.shard, outcome.swappedAt);
    };
    const skipped = new Set<number>();
    const flush = async (keys: ShardKeys) => {
      if (whileHeld && !this.#leases.isHeld(keys.shard)) {
        skipped.add(keys.shard);
        return;
      }
      this.#flushing.add(keys.shard);
      try {
        const outcome = await flushShardOnce(ctx, keys);
        record(outcome);
        // A leftover batch was finished first; the dirty hash behind it is due too, so do not wait a cycle.
        if (outcome.kind === "batch" && outcome.resumed) record(await flushShardOnce(ctx, keys));
      } catch (error) {
        failures.push({ shard: keys.shard, error });
      } finally {
        this.#flushing.delete(keys.shard);
      }
    };
    const due = [...shards];
    await Promise.all(
      Array.from({ length: Math.min(this.#options.concurrency, due.length) }, async () => {
        for (let keys = due.shift(); keys !== undefined; keys = due.shift()) await flush(keys);
      }),
    );
    // In shard order, whatever order they finished in.
    outcomes.sort((a, b) => a.shard - b.shard);
    failures.sort((a, b) => a.shard - b.shard);
    // After a cycle in which every shard synced, no unfinished batch older than this cycle exists, so no
    // ledger row older than the retention can still be needed to refuse a batch.
    if (failures.length === 0) await this.#pruneLedgerHourly();
    const idempotencyRecords = await pruneIdempotencyIndexes(this.#options.redis, shards, Date.now()).catch(
      () => undefined,
    );
    const report = {
      startedAt,
      durationMs: performance.now() - began,
      outcomes,
      failures,
      idempotencyRecords,
      shards: shards.map((keys) => keys.shard).filter((shard) => !skipped.has(shard)),
    };
    this.#lastReport = report;
    this.#log(report, shards);
    this.#tell("cycle", report);
    return report;
  }

  /**
   * now − the time up to which Postgres holds every accepted increment (the swap time of the last committed
   * batch, or of a cycle that found nothing pending), over all shards. Before the first sync it counts from
   * this syncer's start.
   */
  stalenessMs(now = Date.now(), shards: readonly ShardKeys[] = this.#shardKeys): number {
    if (shards.length === 0) return 0;
    const known = shards.map((keys) => this.#syncedThrough.get(keys.shard) ?? this.#startedAt);
    return Math.max(0, now - Math.min(...known));
  }

  /** stalenessMs over the shards this syncer holds: what it answers for; 0 while it holds none. */
  heldStalenessMs(now = Date.now()): number {
    return this.stalenessMs(now, this.#leases.held());
  }

  async #pruneLedgerHourly(): Promise<void> {
    const retention = this.#options.ledgerRetentionMs;
    if (retention === undefined || performance.now() - this.#lastPruneAt < PRUNE_EVERY_MS) return;
    this.#lastPruneAt = performance.now();
    try {
      const pruned = await pruneLedger(this.#options.pool, retention);
      if (pruned > 0) this.#options.logger.info({ pruned }, "pruned old ledger rows");
    } catch (error) {
      this.#options.logger.warn({ err: error }, "could not prune the ledger; will try again in an hour");
    }
  }

  /** emit(), but each listener on its own: one that throws is logged, and the others still run. */
  #tell<Event extends keyof SyncerEvents>(event: Event, ...args: SyncerEvents[Event]): void {
    for (const listener of this.listeners(event) as ((...values: SyncerEvents[Event]) => void)[]) {
      try {
        listener(...args);
      } catch (error) {
        this.#options.logger.error({ err: error, event }, "syncer listener failed");
      }
    }
  }

  #advance(shard: number, through: Date): void {
    const time = through.getTime();
    if (time > (this.#syncedThrough.get(shard) ?? 0)) this.#syncedThrough.set(shard, time);
  }

  async #loadSyncState(): Promise<void> {
    try {
      for (const [shard, state] of await readSyncState(this.#options.pool)) {
        // Raised, never lowered: another syncer may have committed later batches of a shard taken over.
        const next = state.lastSeq + 1n;
        if ((this.#minSeq.get(shard) ?? 0n) < next) this.#minSeq.set(shard, next);
        this.#advance(shard, state.syncedThrough);
      }
      this.#syncStateLoaded = true;
    } catch {
      // Postgres is down: the cycle will fail and report it; try again next cycle.
    }
  }

  /** One error line when a shard stops because Redis went back in time, one info line when it syncs again. */
  #logStoppedShards(report: CycleReport): void {
    const { logger } = this.#options;
    for (const { shard, error } of report.failures) {
      if (!(error instanceof RedisWentBackError) || this.#stopped.has(shard)) continue;
      this.#stopped.set(shard, error.message);
      logger.error(
        {
          shard,
          reason: error.message,
          consequence:
            "a replica was promoted without the latest writes; syncing the shard now could count increments twice, so it stays unsynced and this syncer not ready until an operator has looked",
          runbook: "docs/operations.md#redis-went-back-in-time",
        },
        "shard stopped: Redis went back in time",
      );
    }
    // A cycle may finish a shard's leftover batch and then stop at its next: only a shard that did not
    // fail in the cycle syncs again.
    const failed = new Set(report.failures.map(({ shard }) => shard));
    for (const { shard } of report.outcomes) {
      if (failed.has(shard) || !this.#stopped.delete(shard)) continue;
      logger.info({ shard }, "shard syncs again");
    }
  }

  async #run(): Promise<void> {
    const { intervalMs } = this.#options;
    let nextAt = performance.now() + intervalMs;
    while (!this.#stop.signal.aborted) {
      await this.#sleepUntil(nextAt);
      if (this.#stop.signal.aborted) break;
      const held = this.#leases.held();
      if (held.length > 0) {
        const report = await this.runCycle(held, { whileHeld: true });
        if (report.durationMs > intervalMs) {
          this.#overruns.failed(
            `a cycle over ${held.length} shards took ${Math.round(report.durationMs)} ms`,
          );
        } else {
          this.#overruns.succeeded();
        }
      }
      nextAt += intervalMs;
      const now = performance.now();
      // Overran: the next cycle starts at once (fixed rate: a slow cycle must not add a whole interval of
      // staleness), and the schedule restarts from it rather than bursting through the missed slots.
      if (nextAt <= now) nextAt = now;
      // Woken early by a new lease: restart the schedule from now.
      else if (nextAt - now > intervalMs) nextAt = now + intervalMs;
    }
  }

  async #sleepUntil(at: number): Promise<void> {
    const delay = at - performance.now();
    if (delay <= 0) return;
    const woken = new Promise<void>((resolve) => {
      this.#wake = resolve;
    });
    await Promise.race([sleep(delay, undefined, { signal: this.#stop.signal }).catch(() => {}), woken]);
    this.#wake = undefined;
  }

  #log(report: CycleReport, shards: readonly ShardKeys[]): void {
    const { logger } = this.#options;
    this.#logStoppedShards(report);
    const unconfirmed = report.failures.find((failure) => failure.error instanceof SwapUnconfirmedError);
    if (unconfirmed) this.#unconfirmedSwaps.failed(unconfirmed.error);
    else if (report.outcomes.length > 0) this.#unconfirmedSwaps.succeeded();
    for (const outcome of report.outcomes) {
      if (outcome.kind !== "batch") continue;
      if (outcome.renumbered) {
        logger.warn(
          { shard: outcome.shard, seq: String(outcome.seq) },
          "the shard's batch sequence was missing in Redis: Redis lost its data, and the increments it held that Postgres did not have are lost; numbering goes on from Postgres'",
        );
      }
      for (const item of outcome.quarantined) {
        logger.error(
          { shard: outcome.shard, batchId: outcome.batchId, ...item },
          "delta set aside: Postgres refused its row",
        );
      }
      logger.debug(
        { ...outcome, seq: String(outcome.seq), quarantined: outcome.quarantined.length },
        "batch synced",
      );
    }
    // A store being down fails every shard every cycle: said once (and every 30 s while it lasts), not as a
    // stack per shard per cycle. Any other failure is worth its own line.
    const unreachable = report.failures.find((failure) => isPostgresUnreachable(failure.error));
    if (unreachable) this.#postgresUnreachable.failed(unreachable.error);
    else if (report.outcomes.length > 0) this.#postgresUnreachable.succeeded();
    for (const failure of report.failures) {
      // Redis out of reach is its connection's to report (lib/redis/connection.ts); the others are said
      // above, once each.
      if (isPostgresUnreachable(failure.error) || isRedisUnreachable(failure.error)) continue;
      if (failure.error instanceof RedisWentBackError || failure.error instanceof SwapUnconfirmedError)
        continue;
      logger.error(
        { shard: failure.shard, err: failure.error },
        "shard sync failed; its batch will be retried",
      );
    }
    const stalenessSeconds = this.stalenessMs(Date.now(), shards) / 1000;
    if (report.failures.length > 0 || stalenessSeconds > STALENESS_WARNING_S) {
      logger.warn({ stalenessSeconds }, "postgres is behind what was accepted");
    }
  }
}
