import { EventEmitter } from "node:events";
import type pg from "pg";
import { FailureStreak } from "../lib/failure-streak.ts";
import type { Logger } from "../lib/logger.ts";
import type { Acknowledgements } from "../lib/redis/acknowledgements.ts";
import type { RedisClient } from "../lib/redis/client.ts";
import { isRedisReply } from "../lib/redis/errors.ts";
import type { Keyspace, ShardKeys } from "../lib/redis/keyspace.ts";
import { Scripts } from "../lib/redis/scripts.ts";
import type { Batch } from "./batch.ts";
import { CycleLog } from "./cycle-log.ts";
import type { CycleReport } from "./cycle-report.ts";
import { CycleSchedule } from "./cycle-schedule.ts";
import type { FlushContext, StepHook } from "./flush-context.ts";
import { flushShardOnce } from "./flush-shard.ts";
import { Housekeeping } from "./housekeeping.ts";
import { ShardLeases } from "./shard-leases.ts";
import { flushShards } from "./shard-pool.ts";
import { ShardProgress } from "./shard-progress.ts";

export type { CycleReport } from "./cycle-report.ts";

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

/**
 * A syncer: it holds a fair share of the shards' leases (ShardLeases) and, while it holds any, runs a cycle
 * over them every `intervalMs` at a fixed rate (CycleSchedule), `concurrency` shards at a time (flushShards),
 * each batch through the protocol (flushShardOnce). It keeps what it knows of each shard's progress
 * (ShardProgress), tidies after each cycle (Housekeeping) and says what happened (CycleLog).
 */
export class Syncer extends EventEmitter<SyncerEvents> {
  readonly #options: SyncerOptions;
  readonly #leases: ShardLeases;
  /** Shards being flushed right now: their leases are not given up mid-batch. */
  readonly #flushing = new Set<number>();
  readonly #progress: ShardProgress;
  readonly #schedule: CycleSchedule;
  readonly #housekeeping: Housekeeping;
  readonly #log: CycleLog;
  readonly #flushContext: FlushContext;
  #lastReport: CycleReport | undefined;

  constructor(options: SyncerOptions) {
    super();
    this.#options = options;
    const scripts = new Scripts(options.redis, options.keyspace, options.acknowledgements);
    this.#progress = new ShardProgress(options.pool);
    this.#log = new CycleLog(options.logger, options.postgresLocation);
    this.#housekeeping = new Housekeeping({
      pool: options.pool,
      scripts,
      logger: options.logger,
      ledgerRetentionMs: options.ledgerRetentionMs,
    });
    this.#flushContext = {
      scripts,
      pool: options.pool,
      scanCount: options.scanCount,
      progress: this.#progress,
      onStep: options.onStep,
      maxBatchAgeMs: options.ledgerRetentionMs,
      onBatchApplied: (batch) => this.#tell("batch-applied", batch),
    };
    this.#leases = this.#shareShards(scripts);
    this.#schedule = new CycleSchedule(options.intervalMs, () => this.#scheduledCycle());
  }

  /** The shards this syncer holds the leases of, and so applies. */
  get heldShards(): number[] {
    return this.#leases.held().map((shard) => shard.shard);
  }

  /** The shards this syncer holds that it does not sync because Redis went back in time on them. */
  get stoppedShards(): number[] {
    return this.heldShards.filter((shard) => this.#log.isStopped(shard));
  }

  get lastReport(): CycleReport | undefined {
    return this.#lastReport;
  }

  start(): void {
    this.#leases.start();
    this.#schedule.start();
  }

  /**
   * Graceful stop: no new cycle starts, the one under way finishes, then one last cycle flushes what was
   * accepted until now in the shards still held, and their leases are released for the other syncers.
   */
  async stop(): Promise<void> {
    await this.#schedule.stop();
    const held = this.#leases.held();
    if (held.length > 0) await this.runCycle(held, { whileHeld: true });
    await this.#leases.release();
  }

  /**
   * One pass over `shards` (every shard unless told). `whileHeld`: the running syncer's cycles skip a shard
   * whose lease it gave up or lost since the cycle began, rather than work beside its new holder.
   */
  async runCycle(
    shards: readonly ShardKeys[] = this.#options.keyspace.shards,
    { whileHeld = false }: { whileHeld?: boolean } = {},
  ): Promise<CycleReport> {
    const startedAt = new Date();
    const began = performance.now();
    await this.#progress.load();
    const { outcomes, failures, flushed } = await flushShards(shards, {
      concurrency: this.#options.concurrency,
      flush: (keys) => flushShardOnce(this.#flushContext, keys),
      skip: whileHeld ? (shard) => !this.#leases.isHeld(shard) : undefined,
      // Staleness moves as each shard commits, not at the end of the cycle: a later shard's work does not
      // make an earlier one's data any older.
      onOutcome: (outcome) => {
        if (outcome.kind === "idle") this.#progress.advance(outcome.shard, outcome.observedAt);
        if (outcome.kind === "batch") this.#progress.advance(outcome.shard, outcome.swappedAt);
      },
      busy: this.#flushing,
    });
    const idempotencyRecords = await this.#housekeeping.afterCycle(shards, failures.length === 0);
    const report = {
      startedAt,
      durationMs: performance.now() - began,
      outcomes,
      failures,
      idempotencyRecords,
      shards: flushed,
    };
    this.#lastReport = report;
    this.#log.record(report, this.stalenessMs(Date.now(), shards) / 1000);
    this.#tell("cycle", report);
    return report;
  }

  /**
   * now − the time up to which Postgres holds every accepted increment, over `shards` (every shard unless
   * told); see ShardProgress.
   */
  stalenessMs(now = Date.now(), shards: readonly ShardKeys[] = this.#options.keyspace.shards): number {
    return this.#progress.stalenessMs(now, shards);
  }

  /** stalenessMs over the shards this syncer holds: what it answers for; 0 while it holds none. */
  heldStalenessMs(now = Date.now()): number {
    return this.stalenessMs(now, this.#leases.held());
  }

  async #scheduledCycle(): Promise<void> {
    const held = this.#leases.held();
    if (held.length === 0) return;
    const report = await this.runCycle(held, { whileHeld: true });
    this.#log.timed(report.durationMs, this.#options.intervalMs, held.length);
  }

  /** The leases of this syncer's share of the shards, and what it does as they come and go. */
  #shareShards(scripts: Scripts): ShardLeases {
    const { logger } = this.#options;
    const claimFailures = new FailureStreak(logger, "cannot claim or renew the shards' leases");
    const leases = new ShardLeases({
      scripts,
      shards: this.#options.keyspace.shards,
      ttlMs: this.#options.leaseTtlMs,
      isBusy: (shard) => this.#flushing.has(shard),
      // A Redis that cannot be reached is the connection's to report (lib/redis/connection.ts); an error
      // Redis answered (out of memory, a script refused) is the lease's.
      onClaimError: (error) => {
        if (isRedisReply(error)) claimFailures.failed(error);
      },
      onClaimAnswered: () => claimFailures.succeeded(),
    });
    leases.on("acquired", (shards) => {
      logger.info({ holder: leases.holderId, shards }, "took shards");
      // Another syncer may have synced them up to a later point than this one knows.
      this.#progress.forget();
      // Synced at once: the syncer that had them may have died just before its cycle was due.
      this.#schedule.wake();
    });
    leases.on("released", (shards) => logger.info({ holder: leases.holderId, shards }, "released shards"));
    // Its renewals failed (Redis out of reach, a long pause): another syncer may be applying them now.
    leases.on("lost", (shards) => logger.warn({ holder: leases.holderId, shards }, "lost shards"));
    return leases;
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
}
