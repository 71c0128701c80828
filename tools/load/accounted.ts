import { setTimeout as sleep } from "node:timers/promises";
import { Accounting, type Outcome, sendIncrement, sendReset } from "./increment.ts";

export type { Outcome };

/**
 * A load generator that remembers what it was told about every request, so a test can check the one
 * promise that matters: Postgres holds exactly the increments that were answered 202.
 *
 * Half the requests go to a few hot keys (the case the design exists for), half each to a key of its own;
 * a unique key pins down the fate of one request exactly, so "counted twice" cannot hide in a sum. With
 * `resetKeys`, that many workers each own a key they also reset now and then (DELETE /counters/{key}): one
 * worker per key, so its increments and resets are ordered, and the key's total is what was accepted after
 * its last reset.
 */

export interface SentIncrement {
  /** An increment of `value`, or a reset of the key (value 0). */
  kind: "increment" | "reset";
  key: string;
  value: number;
  outcome: Outcome;
  status: number | undefined;
  /** The base URL it was sent to, so a test can tell one node's requests from another's. */
  target: string;
  /** performance.now() when it was sent and when its outcome was known: `sent` is in completion order. */
  startedAt: number;
  endedAt: number;
}

export interface LoadOptions {
  /** Base URLs to spread requests over; read before every request, so a test may change it. */
  targets: () => string[];
  token: string;
  concurrency?: number;
  /** Keys that half the requests share; 0 gives every request a key of its own. */
  hotKeys?: number;
  /** Per-request timeout; a request that times out is an unknown outcome. */
  timeoutMs?: number;
  /** Pause between a worker's requests, to hold a rate rather than saturate the machine. */
  pauseMs?: number;
  /** Workers that own a key they increment and reset (the token needs counters:reset); default 0. */
  resetKeys?: number;
}

// A worker that owns a reset key spends every third turn on it, and resets it every fifth of those.
const RESET_KEY_TURNS = 3;
const RESETS_EVERY = 5;
// A reset without an answer is retried with its Idempotency-Key until one comes, as a client would: its
// outcome then orders it against the key's increments.
const RESET_ATTEMPTS = 20;

export class Load {
  readonly sent: SentIncrement[] = [];
  readonly #options: Required<LoadOptions>;
  #running = false;
  #workers: Promise<void>[] = [];
  #nextUnique = 0;
  readonly #tag = Math.random().toString(36).slice(2, 8);

  constructor(options: LoadOptions) {
    this.#options = { concurrency: 8, hotKeys: 10, timeoutMs: 5_000, pauseMs: 0, resetKeys: 0, ...options };
  }

  start(): this {
    this.#running = true;
    this.#workers = Array.from({ length: this.#options.concurrency }, (_, worker) => this.#work(worker));
    return this;
  }

  async stop(): Promise<void> {
    this.#running = false;
    await Promise.all(this.#workers);
  }

  count(outcome: Outcome, kind?: SentIncrement["kind"]): number {
    return this.sent.filter(
      (request) => request.outcome === outcome && (kind === undefined || request.kind === kind),
    ).length;
  }

  /** What was sent and how it ended, for a test's log line. */
  summary(): string {
    const of = (kind: SentIncrement["kind"]) =>
      `${this.sent.filter((request) => request.kind === kind).length} ${kind}s (${this.count("accepted", kind)} accepted, ${this.count("unknown", kind)} unknown)`;
    return `${of("increment")}, ${of("reset")}`;
  }

  /** Resolves once `n` more requests were answered 202 (a way to let load run "for a while" deterministically). */
  async waitForAccepted(n: number, timeoutMs = 30_000): Promise<void> {
    const target = this.count("accepted") + n;
    const deadline = Date.now() + timeoutMs;
    while (this.count("accepted") < target) {
      if (Date.now() > deadline)
        throw new Error(`load: fewer than ${n} requests accepted within ${timeoutMs} ms`);
      await sleep(20);
    }
  }

  async #work(worker: number): Promise<void> {
    let turn = 0;
    while (this.#running) {
      const targets = this.#options.targets();
      const target = targets[(worker + turn++) % Math.max(1, targets.length)];
      if (target === undefined) {
        await sleep(20);
        continue;
      }
      if (worker < this.#options.resetKeys && turn % RESET_KEY_TURNS === 0) {
        const key = `r-${this.#tag}-${worker}`;
        const onKey = turn / RESET_KEY_TURNS;
        this.sent.push(
          onKey % RESETS_EVERY === 0
            ? await this.#reset(target, key, `${key}-${onKey}`)
            : await this.#send(target, key, 1 + (onKey % 100)),
        );
      } else {
        const hot = this.#options.hotKeys > 0 && turn % 2 === 0;
        const key = hot
          ? `hot-${this.#tag}-${(worker + turn) % this.#options.hotKeys}`
          : `u-${this.#tag}-${this.#nextUnique++}`;
        const value = hot ? 1 + ((worker * 7919 + turn) % 1_000) : 1 + Math.floor(Math.random() * 1_000_000);
        this.sent.push(await this.#send(target, key, value));
      }
      if (this.#options.pauseMs > 0) await sleep(this.#options.pauseMs);
    }
  }

  async #send(target: string, key: string, value: number): Promise<SentIncrement> {
    const startedAt = performance.now();
    const { outcome, status } = await sendIncrement(
      target,
      this.#options.token,
      { key, value },
      this.#options.timeoutMs,
    );
    return { kind: "increment", key, value, outcome, status, target, startedAt, endedAt: performance.now() };
  }

  async #reset(target: string, key: string, idempotencyKey: string): Promise<SentIncrement> {
    const startedAt = performance.now();
    let result = await sendReset(target, this.#options.token, key, idempotencyKey, this.#options.timeoutMs);
    for (let attempt = 1; result.outcome === "unknown" && attempt < RESET_ATTEMPTS; attempt++) {
      await sleep(250);
      result = await sendReset(target, this.#options.token, key, idempotencyKey, this.#options.timeoutMs);
    }
    const { outcome, status } = result;
    return { kind: "reset", key, value: 0, outcome, status, target, startedAt, endedAt: performance.now() };
  }
}

/** Every way Postgres disagrees with what the clients were told (see Accounting.violations). */
export function exactlyOnceViolations(sent: SentIncrement[], persisted: Map<string, bigint>): string[] {
  const accounting = new Accounting();
  for (const request of sent) {
    if (request.kind === "reset") accounting.recordReset(request.key, request.outcome);
    else accounting.record(request.key, request.value, request.outcome);
  }
  return accounting.violations(persisted);
}
