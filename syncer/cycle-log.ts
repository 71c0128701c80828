import { FailureStreak } from "../lib/failure-streak.ts";
import type { Logger } from "../lib/logger.ts";
import { isPostgresUnreachable } from "../lib/postgres/unreachable.ts";
import { isRedisUnreachable } from "../lib/redis/errors.ts";
import type { CycleReport } from "./cycle-report.ts";
import { RedisWentBackError, SwapUnconfirmedError } from "./protocol-errors.ts";

// The SPEC's bound: Postgres is never more than 10 s behind while it is reachable.
export const STALENESS_WARNING_S = 10;

/**
 * What a syncer says of its cycles, and the shards it stopped. A condition that fails every shard every
 * cycle (Postgres or Redis down, replicas that do not confirm, cycles that overrun) is said once, with a
 * reminder every 30 s and one line when it ends; a shard stopped because Redis went back in time is said
 * once, and once more when it syncs again; any other failure gets a line of its own.
 */
export class CycleLog {
  readonly #logger: Logger;
  readonly #postgresUnreachable: FailureStreak;
  readonly #unconfirmedSwaps: FailureStreak;
  readonly #overruns: FailureStreak;
  /** Shards not synced because Redis went back in time on them, with why. */
  readonly #stopped = new Map<number, string>();

  constructor(logger: Logger, postgresLocation: string | undefined) {
    this.#logger = logger;
    this.#postgresUnreachable = new FailureStreak(
      logger,
      `cannot reach Postgres${postgresLocation ? ` at ${postgresLocation}` : ""}: batches wait in Redis and are retried every cycle`,
    );
    this.#unconfirmedSwaps = new FailureStreak(
      logger,
      "the replicas do not confirm the swaps within REDIS_WAIT_TIMEOUT_MS: batches wait in Redis until they do",
    );
    this.#overruns = new FailureStreak(
      logger,
      "cycles take longer than SYNC_INTERVAL_MS: Postgres is not keeping up with the distinct keys per cycle and staleness grows (docs/scaling.md, the next bottleneck)",
    );
  }

  isStopped(shard: number): boolean {
    return this.#stopped.has(shard);
  }

  /** A cycle over `shards` took `durationMs` against a schedule of `intervalMs`. */
  timed(durationMs: number, intervalMs: number, shards: number): void {
    if (durationMs > intervalMs) {
      this.#overruns.failed(`a cycle over ${shards} shards took ${Math.round(durationMs)} ms`);
    } else {
      this.#overruns.succeeded();
    }
  }

  /** Says what the cycle did; `stalenessSeconds` over the shards it covered. */
  record(report: CycleReport, stalenessSeconds: number): void {
    const logger = this.#logger;
    this.#recordStoppedShards(report);
    this.#streak(this.#unconfirmedSwaps, report, (error) => error instanceof SwapUnconfirmedError);
    this.#streak(this.#postgresUnreachable, report, isPostgresUnreachable);
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
    for (const failure of report.failures) {
      // Said above, once each; Redis out of reach is its connection's to report (lib/redis/connection.ts).
      const error = failure.error;
      if (isPostgresUnreachable(error) || isRedisUnreachable(error)) continue;
      if (error instanceof RedisWentBackError || error instanceof SwapUnconfirmedError) continue;
      logger.error({ shard: failure.shard, err: error }, "shard sync failed; its batch will be retried");
    }
    if (report.failures.length > 0 || stalenessSeconds > STALENESS_WARNING_S) {
      logger.warn({ stalenessSeconds }, "postgres is behind what was accepted");
    }
  }

  /** Fails `streak` when a failure of the cycle matches, ends it when the cycle synced something. */
  #streak(streak: FailureStreak, report: CycleReport, matches: (error: unknown) => boolean): void {
    const failure = report.failures.find(({ error }) => matches(error));
    if (failure) streak.failed(failure.error);
    else if (report.outcomes.length > 0) streak.succeeded();
  }

  /** One error line when a shard stops because Redis went back in time, one info line when it syncs again. */
  #recordStoppedShards(report: CycleReport): void {
    const logger = this.#logger;
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
}
