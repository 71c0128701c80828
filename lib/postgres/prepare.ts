import { setTimeout as sleep } from "node:timers/promises";
import { EX_UNAVAILABLE, OperatorError } from "../exit.ts";
import { FailureStreak } from "../failure-streak.ts";
import type { Logger } from "../logger.ts";
import { maskedUrl } from "../masked-url.ts";
import { migrate } from "./migrate.ts";
import { createPool, ensureDatabase } from "./pool.ts";
import { isPostgresUnreachable } from "./unreachable.ts";

const RETRY_EVERY_MS = 1_000;

export interface PrepareDatabaseOptions {
  logger: Logger;
  /** How long to wait for Postgres to accept connections before giving up (0: try once). */
  waitMs: number;
}

/**
 * `npm run migrate`, and the first step of `npm start`: waits for Postgres (a container that starts beside
 * it may take a few seconds), creates the database if needed and applies pending migrations; returns their
 * names. A Postgres that cannot be reached in time, or that refuses us, is an OperatorError naming
 * DATABASE_URL (its password masked) and why.
 */
export async function prepareDatabase(url: string, options: PrepareDatabaseOptions): Promise<string[]> {
  const where = `DATABASE_URL=${maskedUrl(url)}`;
  const streak = new FailureStreak(options.logger, `cannot reach Postgres at ${where}; waiting`);
  const deadline = performance.now() + options.waitMs;
  for (let attempt = 1; ; attempt++) {
    try {
      await ensureDatabase(url);
      streak.succeeded();
      break;
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      if (!isPostgresUnreachable(error)) {
        throw new OperatorError(`Postgres at ${where} refused: ${reason}`, EX_UNAVAILABLE);
      }
      if (performance.now() >= deadline) {
        const waited =
          options.waitMs > 0 ? ` (waited ${Math.round(options.waitMs / 1000)} s, ${attempt} attempts)` : "";
        throw new OperatorError(
          `cannot reach Postgres at ${where}: ${reason}${waited}. Is it running, and is DATABASE_URL right?`,
          EX_UNAVAILABLE,
        );
      }
      streak.failed(error);
      await sleep(Math.min(RETRY_EVERY_MS, deadline - performance.now()));
    }
  }
  const pool = createPool({ connectionString: url, applicationName: "tally-migrate", max: 1 });
  try {
    return await migrate(pool);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new OperatorError(`cannot migrate the database at ${where}: ${reason}`, EX_UNAVAILABLE);
  } finally {
    await pool.end();
  }
}
