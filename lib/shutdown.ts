import type { Logger } from "./logger.ts";

export type Cleanup = { name: string; run: () => Promise<void> | void };

/**
 * Graceful shutdown in the graphile-worker manner: the first SIGTERM/SIGINT runs the registered cleanups
 * in reverse order of registration (what started last stops first), a second signal forces the exit, and
 * a cleanup that hangs past `timeoutMs` forces it too.
 */
export class Shutdown {
  readonly #cleanups: Cleanup[] = [];
  #started = false;
  readonly #logger: Logger;
  readonly #timeoutMs: number;
  readonly #onSignal = (signal: NodeJS.Signals) => {
    if (this.#started) {
      this.#logger.warn({ signal }, "second signal: exiting now");
      process.exit(1);
    }
    this.#logger.info({ signal }, "shutting down");
    void this.run().then((failed) => process.exit(failed ? 1 : 0));
  };

  constructor(logger: Logger, timeoutMs: number) {
    this.#logger = logger;
    this.#timeoutMs = timeoutMs;
  }

  /** Registers a cleanup; it runs before every cleanup registered earlier. */
  add(name: string, run: Cleanup["run"]): void {
    this.#cleanups.push({ name, run });
  }

  listen(): void {
    process.on("SIGTERM", this.#onSignal);
    process.on("SIGINT", this.#onSignal);
  }

  /** Runs every cleanup once; resolves to true when any failed or the deadline passed. */
  async run(): Promise<boolean> {
    if (this.#started) return false;
    this.#started = true;
    const deadline = setTimeout(() => {
      this.#logger.error({ timeoutMs: this.#timeoutMs }, "shutdown deadline passed: exiting now");
      process.exit(1);
    }, this.#timeoutMs);
    deadline.unref();
    let failed = false;
    for (const cleanup of [...this.#cleanups].reverse()) {
      try {
        await cleanup.run();
      } catch (error) {
        failed = true;
        this.#logger.error({ err: error, cleanup: cleanup.name }, "cleanup failed");
      }
    }
    clearTimeout(deadline);
    return failed;
  }
}
