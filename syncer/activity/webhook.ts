import type { Logger } from "../../lib/logger.ts";

export interface WebhookOptions {
  url: string;
  /** A delivery that has not received its response (headers) within this long is aborted and logged. */
  timeoutMs: number;
  logger: Logger;
  /**
   * Reports waiting behind the one in flight; past this many the oldest waiting one is dropped (and
   * logged). The Redis stream is the complete record; the webhook is a best-effort notification, and the
   * newest minutes are the ones a dashboard wants.
   */
  maxQueued?: number;
}

interface Delivery {
  body: string;
  /** Logged with every line about this delivery (e.g. the minute), so a failure can be traced back. */
  context: Record<string, unknown>;
}

/**
 * POSTs JSON documents to one URL, one at a time, off the caller's path: `send` only queues and returns.
 * At most one request is in flight, so a slow or hanging receiver costs one socket and a short queue, never
 * a pile of requests, and never time in the caller (the syncer's cycle). Every outcome is logged; nothing
 * here throws or rejects.
 */
export class WebhookSender {
  readonly #options: WebhookOptions;
  readonly #maxQueued: number;
  readonly #queue: Delivery[] = [];
  /** Set and cleared synchronously with the queue checks, so a report sent as the pump ends is not stranded. */
  #running = false;
  #pumping: Promise<void> = Promise.resolve();

  constructor(options: WebhookOptions) {
    this.#options = options;
    this.#maxQueued = options.maxQueued ?? 10;
  }

  send(payload: unknown, context: Record<string, unknown> = {}): void {
    if (this.#queue.length >= this.#maxQueued) {
      const dropped = this.#queue.shift();
      this.#options.logger.warn(
        { ...dropped?.context, queued: this.#maxQueued },
        "activity webhook busy: dropped the oldest waiting report",
      );
    }
    this.#queue.push({ body: JSON.stringify(payload), context });
    if (!this.#running) {
      this.#running = true;
      this.#pumping = this.#pump();
    }
  }

  /**
   * Resolves once nothing is queued or in flight, or after `timeoutMs` (for shutdown: the last report gets
   * a chance, a hanging receiver does not hold the process).
   */
  async idle(timeoutMs = Number.POSITIVE_INFINITY): Promise<void> {
    const pumping = this.#pumping;
    if (!this.#running) return;
    if (!Number.isFinite(timeoutMs)) return pumping;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([pumping, timeout]);
    clearTimeout(timer);
  }

  async #pump(): Promise<void> {
    try {
      for (let next = this.#queue.shift(); next; next = this.#queue.shift()) await this.#deliver(next);
    } finally {
      this.#running = false;
    }
  }

  async #deliver(delivery: Delivery): Promise<void> {
    const { url, timeoutMs, logger } = this.#options;
    const began = performance.now();
    try {
      const response = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: delivery.body,
        // A redirected POST may be replayed as a GET by fetch; a webhook should not redirect, so the 3xx
        // is logged as a failure instead.
        redirect: "manual",
        signal: AbortSignal.timeout(timeoutMs),
      });
      // The body is of no interest; cancelling it frees the connection for the next delivery.
      await response.body?.cancel().catch(() => {});
      const fields = { ...delivery.context, status: response.status, durationMs: elapsed(began) };
      if (response.ok) logger.info(fields, "activity webhook delivered");
      else logger.warn(fields, "activity webhook failed");
    } catch (error) {
      const timedOut = error instanceof Error && error.name === "TimeoutError";
      logger.warn(
        { ...delivery.context, err: error, timedOut, timeoutMs, durationMs: elapsed(began) },
        timedOut ? "activity webhook timed out" : "activity webhook failed",
      );
    }
  }
}

function elapsed(since: number): number {
  return Math.round(performance.now() - since);
}
