import type { Logger } from "./logger.ts";

const REMIND_EVERY_MS = 30_000;

/**
 * Logs a failure that repeats while something stays broken (a lease that cannot be claimed, a store that
 * cannot be reached): one line when it starts, a reminder at most every 30 s with how long it has lasted and
 * how many attempts failed, and one line when it ends. Never a line per attempt.
 */
export class FailureStreak {
  readonly #logger: Logger;
  readonly #message: string;
  readonly #remindEveryMs: number;
  readonly #now: () => number;
  #since: number | undefined;
  #attempts = 0;
  #lastLoggedAt = 0;

  /** `message` says what fails, e.g. "cannot reach Postgres". */
  constructor(logger: Logger, message: string, options: { remindEveryMs?: number; now?: () => number } = {}) {
    this.#logger = logger;
    this.#message = message;
    this.#remindEveryMs = options.remindEveryMs ?? REMIND_EVERY_MS;
    this.#now = options.now ?? (() => performance.now());
  }

  failed(error: unknown): void {
    const now = this.#now();
    this.#attempts++;
    const reason = error instanceof Error ? error.message : String(error);
    if (this.#since === undefined) {
      this.#since = now;
      this.#lastLoggedAt = now;
      this.#logger.warn({ reason }, this.#message);
      return;
    }
    if (now - this.#lastLoggedAt < this.#remindEveryMs) return;
    this.#lastLoggedAt = now;
    this.#logger.warn(
      { reason, failingForSeconds: Math.round((now - this.#since) / 1000), attempts: this.#attempts },
      `${this.#message} (still)`,
    );
  }

  succeeded(): void {
    if (this.#since === undefined) return;
    this.#logger.info(
      { failedForSeconds: Math.round((this.#now() - this.#since) / 1000), attempts: this.#attempts },
      `${this.#message}: recovered`,
    );
    this.#since = undefined;
    this.#attempts = 0;
  }
}
