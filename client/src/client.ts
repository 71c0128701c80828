import { setTimeout as sleep } from "node:timers/promises";
import { type Attempt, attemptDelivery } from "./attempt.ts";
import { type Call, OpenBatch, SealedBatch } from "./batch.ts";
import { type CounterPage, type CounterReading, Counters, type ListOptions } from "./counters.ts";
import { TallyClosedError, type TallyError, TallyOutcomeUnknownError } from "./errors.ts";
import {
  type BatchingOptions,
  batchingOptions,
  type ErrorContext,
  retryPolicy,
  type TallyClientOptions,
} from "./options.ts";
import { backoffMs, type RetryPolicy } from "./retry.ts";
import { checkIncrement } from "./rules.ts";
import { BearerToken } from "./token.ts";

/** Plain numbers for the caller's metrics. */
export interface TallyClientStats {
  /** Calls the service accepted (their batch answered 202). */
  incrementsAccepted: number;
  /** Batches the service accepted. */
  batchesAccepted: number;
  /** Attempts after a batch's first. */
  retries: number;
  /** Calls that rejected: refused by the service or of unknown outcome (not validation errors). */
  incrementsFailed: number;
  /** Calls held unanswered now. */
  buffered: number;
  /** Batches being sent now. */
  inFlight: number;
}

// A Retry-After longer than this is not waited out in one go: the batch is asked about again after it.
const MAX_SERVER_DELAY_MS = 60_000;

/**
 * Increments for tally, batched and retried so that each call resolved is counted exactly once.
 *
 * Calls are folded into POST /increments bodies, a batch sent when it is full or `maxWaitMs` after its
 * first call. Every batch carries a fresh Idempotency-Key, and every retry repeats that key and the same
 * body, so a retry after a lost answer never counts twice. A call resolves once the service answered 202
 * for its batch; it rejects with a TallyError that says what happened otherwise.
 */
export class TallyClient {
  readonly #url: string;
  readonly #token: BearerToken;
  readonly #options: BatchingOptions;
  readonly #retry: RetryPolicy;
  readonly #onError: TallyClientOptions["onError"];
  #open = new OpenBatch();
  #openTimer: NodeJS.Timeout | undefined;
  readonly #queue: SealedBatch[] = [];
  readonly #sending = new Set<Promise<void>>();
  #buffered = 0;
  #waitingForRoom = 0;
  #roomWaiters: (() => void)[] = [];
  #closed = false;
  readonly #counters: Counters;
  readonly #stats = { incrementsAccepted: 0, batchesAccepted: 0, retries: 0, incrementsFailed: 0 };

  constructor(options: TallyClientOptions) {
    const base = options.url.endsWith("/") ? options.url : `${options.url}/`;
    this.#url = new URL("increments", base).href;
    this.#token = new BearerToken(options.token);
    this.#options = batchingOptions(options);
    this.#retry = retryPolicy(options.retry);
    this.#onError = options.onError;
    this.#counters = new Counters(base, {
      token: this.#token,
      retry: this.#retry,
      requestTimeoutMs: this.#options.requestTimeoutMs,
    });
  }

  /** The counter, or null when nothing counts for it (never counted, or reset since). Not batched. */
  read(key: string): Promise<CounterReading | null> {
    return this.#counters.read(key);
  }

  /** Every key's reading, in the order asked, 1,000 per request; a key nothing counts for reads as zeros. */
  readMany(keys: readonly string[]): Promise<CounterReading[]> {
    return this.#counters.readMany(keys);
  }

  /** One page of the counters under `prefix`, in key order (Unicode code points). */
  list(options?: ListOptions): Promise<CounterPage> {
    return this.#counters.list(options);
  }

  /** Every counter under `prefix`, fetched a page at a time as the loop asks for more. */
  listAll(prefix?: string, pageSize?: number): AsyncGenerator<CounterReading> {
    return this.#counters.all(prefix, pageSize);
  }

  /**
   * Sets the counter back to zero (the token needs counters:reset), once: retried with one Idempotency-Key.
   * Increments of this client still buffered are not sent first: `flush()` before, to have them count.
   */
  reset(key: string, options?: { idempotencyKey?: string }): Promise<void> {
    return this.#counters.reset(key, options);
  }

  /**
   * Adds `value` to the counter `key`. Resolves once the service accepted the batch that carried it;
   * rejects at once when the call breaks the service's rules, after `close()`, and otherwise with what
   * happened to its batch. Waits while `maxBuffered` calls are unanswered.
   */
  async increment(key: string, value = 1): Promise<void> {
    checkIncrement(key, value, this.#options.maxKeyLength);
    if (this.#closed) throw new TallyClosedError();
    while (this.#buffered >= this.#options.maxBuffered) await this.#room();
    return new Promise<void>((resolve, reject) => this.#add(key, value, { resolve, reject }));
  }

  /** Sends what is buffered now, and resolves once every batch sent before it has been answered. */
  async flush(): Promise<void> {
    this.#seal();
    await Promise.all([...this.#sending]);
  }

  /**
   * Stops taking calls, sends everything buffered (calls waiting for room included) and resolves once all
   * of it has been answered. Safe to call more than once, and from a SIGTERM handler.
   */
  async close(): Promise<void> {
    this.#closed = true;
    do {
      await this.flush();
      // A call that was waiting for room joins the batch after the last one; send that one too.
      if (this.#waitingForRoom > 0) await sleep(this.#options.maxWaitMs);
    } while (this.#buffered > 0 || this.#waitingForRoom > 0);
  }

  get stats(): TallyClientStats {
    return { ...this.#stats, buffered: this.#buffered, inFlight: this.#sending.size };
  }

  /**
   * Sends a batch whose outcome was unknown again, with its Idempotency-Key: the service applies it if it
   * never did, and only answers if it did. Resolves on 202; rejects as a batch's calls would.
   */
  async resend(unknown: TallyOutcomeUnknownError): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.#buffered += 1;
      this.#enqueue(new SealedBatch(unknown.idempotencyKey, unknown.increments, [{ resolve, reject }]));
    });
  }

  #add(key: string, value: number, call: Call): void {
    if (this.#open.size >= this.#options.maxBatchSize) this.#seal();
    this.#open.add(key, value, call);
    this.#buffered += 1;
    if (this.#open.size >= this.#options.maxBatchSize) this.#seal();
    else this.#openTimer ??= setTimeout(() => this.#seal(), this.#options.maxWaitMs);
  }

  #seal(): void {
    clearTimeout(this.#openTimer);
    this.#openTimer = undefined;
    if (this.#open.size === 0) return;
    const batch = this.#open.seal();
    this.#open = new OpenBatch();
    this.#enqueue(batch);
  }

  #enqueue(batch: SealedBatch): void {
    this.#queue.push(batch);
    this.#pump();
  }

  #pump(): void {
    while (this.#sending.size < this.#options.maxInFlight) {
      const batch = this.#queue.shift();
      if (batch === undefined) return;
      const sending = this.#deliverSafely(batch).finally(() => {
        this.#sending.delete(sending);
        this.#buffered -= batch.calls;
        this.#wakeRoomWaiters();
        this.#pump();
      });
      this.#sending.add(sending);
    }
  }

  async #room(): Promise<void> {
    this.#waitingForRoom += 1;
    try {
      await new Promise<void>((wake) => this.#roomWaiters.push(wake));
    } finally {
      this.#waitingForRoom -= 1;
    }
  }

  #wakeRoomWaiters(): void {
    const waiters = this.#roomWaiters;
    this.#roomWaiters = [];
    for (const wake of waiters) wake();
  }

  /** #deliver, whose calls settle whatever goes wrong in it (a throwing onError hook, a bug). */
  async #deliverSafely(batch: SealedBatch): Promise<void> {
    try {
      await this.#deliver(batch);
    } catch (error) {
      this.#stats.incrementsFailed += batch.calls;
      batch.reject(new TallyOutcomeUnknownError(batch.idempotencyKey, batch.increments, 0, error));
    }
  }

  #tell(error: TallyError, context: ErrorContext): void {
    try {
      this.#onError?.(error, context);
    } catch {
      // The caller's hook must not stop a batch from being settled.
    }
  }

  /** Sends one batch until it is accepted, refused, or its retry budget runs out; settles its calls. */
  async #deliver(batch: SealedBatch): Promise<void> {
    // Set once an attempt may have been applied: from then on a failure is an unknown outcome.
    let ambiguous: TallyError | undefined;
    let refreshedToken = false;
    const giveUpAt = performance.now() + this.#retry.budgetMs;
    for (let attempt = 1; ; attempt++) {
      const result = await attemptDelivery(this.#url, this.#token, batch, this.#options.requestTimeoutMs);
      if (result.kind === "accepted") {
        this.#stats.batchesAccepted += 1;
        this.#stats.incrementsAccepted += batch.calls;
        batch.resolve();
        return;
      }
      if (result.kind === "unknown") ambiguous = result.error;
      // A token refused once is fetched again and the attempt repeated, once per batch.
      const retryToken = result.kind === "unauthorized" && this.#token.refreshable && !refreshedToken;
      if (retryToken) {
        refreshedToken = true;
        this.#token.invalidate(result.token);
      }
      const retryable = result.kind === "unknown" || result.kind === "limited" || result.kind === "unsent";
      const delay = retryToken ? 0 : this.#delayBeforeRetry(result, attempt);
      const willRetry = retryToken || (retryable && performance.now() + delay < giveUpAt);
      this.#tell(result.error, { idempotencyKey: batch.idempotencyKey, attempt, willRetry });
      if (!willRetry) {
        this.#stats.incrementsFailed += batch.calls;
        // Whatever the last answer, an earlier attempt may have been applied: only resending it settles that.
        batch.reject(
          ambiguous !== undefined
            ? new TallyOutcomeUnknownError(batch.idempotencyKey, batch.increments, attempt, ambiguous)
            : result.error,
        );
        return;
      }
      this.#stats.retries += 1;
      if (delay > 0) await sleep(delay);
    }
  }

  /** How long to wait before the next attempt: the backoff, or longer if the service asked for more. */
  #delayBeforeRetry(result: Attempt, attempt: number): number {
    const asked = "delayMs" in result ? Math.min(result.delayMs ?? 0, MAX_SERVER_DELAY_MS) : 0;
    return Math.max(backoffMs(this.#retry, attempt), asked);
  }
}
