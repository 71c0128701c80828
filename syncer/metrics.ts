import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Logger } from "../lib/logger.ts";
import {
  type Readiness,
  type RunningMetricsServer,
  scrapeRegistry,
  startMetricsServer,
} from "../lib/metrics.ts";
import { isPostgresUnreachable } from "../lib/postgres/unreachable.ts";
import type { RedisMemoryWatch } from "../lib/redis/memory-watch.ts";
import type { Shutdown } from "../lib/shutdown.ts";
import type { Batch } from "./batch.ts";
import { STALENESS_WARNING_S } from "./cycle-log.ts";
import type { CycleReport, Syncer } from "./syncer.ts";

// A cycle over an idle shard is a few milliseconds; 1M keys take about ten seconds (docs/performance.md).
const CYCLE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const BATCH_KEY_BUCKETS = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];

/**
 * The syncer's metrics, fed by the Syncer's events ("cycle", "batch-applied") and read from it at
 * scrape time, so the Syncer itself knows nothing of Prometheus. One registry per syncer.
 */
export class SyncerMetrics {
  readonly registry = new Registry();
  readonly #cycleDuration = new Histogram({
    name: "tally_syncer_cycle_duration_seconds",
    help: "Duration of a sync cycle over every shard",
    buckets: CYCLE_BUCKETS,
    registers: [this.registry],
  });
  readonly #cycles = new Counter({
    name: "tally_syncer_cycles_total",
    help: "Sync cycles run; failed: at least one shard failed (its batch stays in Redis for the next cycle)",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });
  readonly #batches = new Counter({
    name: "tally_syncer_batches_total",
    help: "Batches this syncer took through the protocol: applied (committed by it), already_applied (the ledger had it: only cleaned up), superseded (another syncer finished it meanwhile)",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  readonly #batchKeys = new Histogram({
    name: "tally_syncer_batch_keys",
    help: "Keys in each batch this syncer applied",
    buckets: BATCH_KEY_BUCKETS,
    registers: [this.registry],
  });
  readonly #deltaMagnitude = new Counter({
    name: "tally_syncer_batch_delta_abs_total",
    help: "Sum of |delta| over the keys of every batch this syncer applied (quarantined deltas included)",
    registers: [this.registry],
  });
  readonly #idempotencyRecords = new Gauge({
    name: "tally_idempotency_records",
    help: "Idempotency-Key records held in Redis over every shard, as of this syncer's last cycle (bound: IDEMPOTENCY_MAX_RECORDS)",
    registers: [this.registry],
  });
  readonly #quarantined = new Counter({
    name: "tally_syncer_quarantined_deltas_total",
    help: "Deltas set aside in quarantined_deltas because Postgres refused their row (a total that would leave bigint, a key it cannot index)",
    registers: [this.registry],
  });
  readonly #postgresUp = new Gauge({
    name: "tally_syncer_postgres_up",
    help: "0 when a shard of this syncer's last cycle failed because Postgres could not be reached, else 1 (also before its first cycle, and while it holds no shard)",
    registers: [this.registry],
  });

  /** `settings`: the configuration the alert rules compare the gauges with, exported beside them. */
  constructor(settings: { shards: number; idempotencyMaxRecords: number }) {
    // Present at 0 from the start, so a rate over them sees the first failure or takeover.
    for (const result of ["ok", "failed"]) this.#cycles.inc({ result }, 0);
    for (const outcome of ["applied", "already_applied", "superseded"]) this.#batches.inc({ outcome }, 0);
    this.#postgresUp.set(1);
    new Gauge({
      name: "tally_sync_shards",
      help: "SYNC_SHARDS: how many shards the syncers share; sum(tally_syncer_shards) below it means a shard without a syncer",
      registers: [this.registry],
    }).set(settings.shards);
    new Gauge({
      name: "tally_idempotency_records_max",
      help: "IDEMPOTENCY_MAX_RECORDS: the bound of tally_idempotency_records, past which idempotent writes get 503 idempotency_capacity",
      registers: [this.registry],
    }).set(settings.idempotencyMaxRecords);
  }

  /** On the cycle's path, so it only adds numbers up. */
  #recordBatch(batch: Batch): void {
    let magnitude = 0;
    // Number, not BigInt: a float sum is what the metric holds anyway, and this runs per key.
    for (const delta of batch.deltas) magnitude += Math.abs(Number(delta));
    this.#deltaMagnitude.inc(magnitude);
  }

  /** Subscribes to `syncer`'s cycles and reads its shards and staleness at every scrape. Once. */
  watch(syncer: Syncer): void {
    syncer.on("cycle", (report) => this.#record(report));
    syncer.on("batch-applied", (batch) => this.#recordBatch(batch));
    new Gauge({
      name: "tally_syncer_staleness_seconds",
      help: "Over the shards this syncer holds: now minus the time up to which Postgres holds every accepted increment (SPEC bound: 10). 0 while it holds none",
      registers: [this.registry],
      collect() {
        this.set(syncer.heldStalenessMs() / 1000);
      },
    });
    new Gauge({
      name: "tally_syncer_stopped_shards",
      help: "Shards this syncer holds but does not sync because Redis went back in time on them (a replica promoted without the latest writes); an operator must look (docs/operations.md)",
      registers: [this.registry],
      collect() {
        this.set(syncer.stoppedShards.length);
      },
    });
    new Gauge({
      name: "tally_syncer_shards",
      help: "Shards whose leases this syncer holds, and so applies; summed over the syncers it is SYNC_SHARDS when every shard has one",
      registers: [this.registry],
      collect() {
        this.set(syncer.heldShards.length);
      },
    });
  }

  #record(report: CycleReport): void {
    this.#cycleDuration.observe(report.durationMs / 1000);
    if (report.shards.length > 0)
      this.#postgresUp.set(report.failures.some(({ error }) => isPostgresUnreachable(error)) ? 0 : 1);
    this.#cycles.inc({ result: report.failures.length > 0 ? "failed" : "ok" });
    if (report.idempotencyRecords !== undefined) this.#idempotencyRecords.set(report.idempotencyRecords);
    for (const outcome of report.outcomes) {
      if (outcome.kind === "superseded") this.#batches.inc({ outcome: "superseded" });
      if (outcome.kind !== "batch") continue;
      if (!outcome.applied) {
        this.#batches.inc({ outcome: "already_applied" });
        continue;
      }
      this.#batches.inc({ outcome: "applied" });
      this.#batchKeys.observe(outcome.keys);
      this.#quarantined.inc(outcome.quarantined.length);
    }
  }
}

/**
 * Not ready while Postgres is further behind than the SPEC allows on a shard this syncer holds, while a
 * shard it holds is stopped because Redis went back in time, or while Redis is full or may evict accepted
 * increments. A syncer that holds no shard (a standby) answers for no
 * staleness and stays ready; shards that no syncer holds show as sum(tally_syncer_shards) < SYNC_SHARDS.
 */
export function syncerReadiness(syncer: Syncer, redisMemory: Pick<RedisMemoryWatch, "problem">): Readiness {
  const stalenessSeconds = syncer.heldStalenessMs() / 1000;
  const redis = redisMemory.problem()?.code;
  const stopped = syncer.stoppedShards;
  return {
    ready: stalenessSeconds <= STALENESS_WARNING_S && redis === undefined && stopped.length === 0,
    detail: {
      shards: syncer.heldShards,
      stalenessSeconds,
      ...(redis ? { redis } : {}),
      ...(stopped.length > 0 ? { stoppedShards: stopped } : {}),
    },
  };
}

/** The syncer's metrics port: /metrics, and /healthz and /readyz for an orchestrator or an alert. */
export function serveSyncerMetrics(
  { syncer, redisMemory, metrics }: { syncer: Syncer; redisMemory: RedisMemoryWatch; metrics: SyncerMetrics },
  options: { host: string; port: number; logger: Logger; shutdown: Shutdown },
): Promise<RunningMetricsServer> {
  return startMetricsServer({
    ...options,
    scrape: scrapeRegistry(metrics.registry),
    readiness: () => syncerReadiness(syncer, redisMemory),
  });
}
