import { setTimeout as sleep } from "node:timers/promises";

/**
 * A load generator that remembers what it was told about every request, so a test can check the one
 * promise that matters: Postgres holds exactly the increments that were answered 202.
 *
 * Half the requests go to a few hot keys (the case the design exists for), half each to a key of its own;
 * a unique key pins down the fate of one request exactly, so "counted twice" cannot hide in a sum.
 */
export type Outcome = "accepted" | "rejected" | "unknown";

export interface SentIncrement {
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
  hotKeys?: number;
  /** Per-request timeout; a request that times out is an unknown outcome. */
  timeoutMs?: number;
  /** Pause between a worker's requests, to hold a rate rather than saturate the machine. */
  pauseMs?: number;
}

export class Load {
  readonly sent: SentIncrement[] = [];
  readonly #options: Required<LoadOptions>;
  #running = false;
  #workers: Promise<void>[] = [];
  #nextUnique = 0;
  readonly #tag = Math.random().toString(36).slice(2, 8);

  constructor(options: LoadOptions) {
    this.#options = { concurrency: 8, hotKeys: 10, timeoutMs: 5_000, pauseMs: 0, ...options };
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

  count(outcome: Outcome): number {
    return this.sent.filter((request) => request.outcome === outcome).length;
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
      const hot = turn % 2 === 0;
      const key = hot
        ? `hot-${this.#tag}-${(worker + turn) % this.#options.hotKeys}`
        : `u-${this.#tag}-${this.#nextUnique++}`;
      const value = hot ? 1 + ((worker * 7919 + turn) % 1_000) : 1 + Math.floor(Math.random() * 1_000_000);
      this.sent.push(await this.#send(target, key, value));
      if (this.#options.pauseMs > 0) await sleep(this.#options.pauseMs);
    }
  }

  async #send(target: string, key: string, value: number): Promise<SentIncrement> {
    const startedAt = performance.now();
    try {
      const response = await fetch(`${target}/increment`, {
        method: "POST",
        headers: { authorization: `Bearer ${this.#options.token}`, "content-type": "application/json" },
        body: JSON.stringify({ key, value }),
        signal: AbortSignal.timeout(this.#options.timeoutMs),
      });
      await response.arrayBuffer();
      const outcome: Outcome =
        response.status === 202 ? "accepted" : response.status < 500 ? "rejected" : "unknown";
      return { key, value, outcome, status: response.status, target, startedAt, endedAt: performance.now() };
    } catch {
      // Connection refused, reset or timed out: the client cannot know whether Redis took it.
      const endedAt = performance.now();
      return { key, value, outcome: "unknown", status: undefined, target, startedAt, endedAt };
    }
  }
}

/**
 * Every way Postgres disagrees with what the clients were told, as readable lines (empty = exactly once).
 * accepted: counted exactly once; rejected (4xx): never counted; unknown (5xx, connection lost): counted
 * once or not at all, never twice.
 */
export function exactlyOnceViolations(sent: SentIncrement[], persisted: Map<string, bigint>): string[] {
  const byKey = new Map<string, { accepted: bigint; unknown: bigint }>();
  for (const request of sent) {
    const entry = byKey.get(request.key) ?? { accepted: 0n, unknown: 0n };
    if (request.outcome === "accepted") entry.accepted += BigInt(request.value);
    if (request.outcome === "unknown") entry.unknown += BigInt(request.value);
    byKey.set(request.key, entry);
  }
  const violations: string[] = [];
  for (const [key, { accepted, unknown }] of byKey) {
    const value = persisted.get(key) ?? 0n;
    if (value < accepted)
      violations.push(`${key}: ${value} in Postgres, but ${accepted} was accepted (lost)`);
    if (value > accepted + unknown) {
      violations.push(
        `${key}: ${value} in Postgres, more than accepted ${accepted} + unknown ${unknown} (doubled)`,
      );
    }
  }
  for (const key of persisted.keys()) {
    if (!byKey.has(key)) violations.push(`${key}: in Postgres but never sent`);
  }
  return violations;
}
