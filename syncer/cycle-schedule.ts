import { setTimeout as sleep } from "node:timers/promises";

/**
 * Runs `cycle` every `intervalMs` at a fixed rate: a cycle's start does not drift by its duration, and a
 * cycle that overruns is followed at once by the next (a slow cycle must not add a whole interval of
 * staleness), the schedule then restarting from it rather than bursting through the missed slots.
 */
export class CycleSchedule {
  readonly #intervalMs: number;
  readonly #cycle: () => Promise<void>;
  readonly #stop = new AbortController();
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;

  constructor(intervalMs: number, cycle: () => Promise<void>) {
    this.#intervalMs = intervalMs;
    this.#cycle = cycle;
  }

  start(): void {
    if (this.#loop) throw new Error("schedule already started");
    this.#loop = this.#run();
  }

  /** Runs a cycle now (once the one under way, if any, is over), and restarts the schedule from it. */
  wake(): void {
    this.#wake?.();
  }

  /** No cycle starts any more; resolves once the one under way has ended. */
  async stop(): Promise<void> {
    this.#stop.abort();
    this.#wake?.();
    await this.#loop;
  }

  async #run(): Promise<void> {
    const intervalMs = this.#intervalMs;
    let nextAt = performance.now() + intervalMs;
    while (!this.#stop.signal.aborted) {
      await this.#sleepUntil(nextAt);
      if (this.#stop.signal.aborted) break;
      await this.#cycle();
      nextAt += intervalMs;
      const now = performance.now();
      if (nextAt <= now) nextAt = now;
      // Woken early: restart the schedule from now.
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
}
