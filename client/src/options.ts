import type { TallyError } from "./errors.ts";
import { DEFAULT_RETRY, type RetryPolicy } from "./retry.ts";
import type { TokenSource } from "./token.ts";

export interface TallyClientOptions {
  /** The service's base URL, e.g. http://tally.internal:3000. */
  url: string;
  token: TokenSource;
  /** Items per POST /increments; the service's MAX_BATCH_SIZE (1,000 unless configured otherwise). */
  maxBatchSize?: number;
  /** The longest a call waits for its batch to fill before the batch is sent. */
  maxWaitMs?: number;
  /** Calls the client holds unanswered at most; beyond, `increment()` waits for room. */
  maxBuffered?: number;
  /** Batches sent at once; more wait their turn. */
  maxInFlight?: number;
  /** The service's MAX_KEY_LENGTH (256 unless configured otherwise). */
  maxKeyLength?: number;
  /** One attempt's limit; past it the attempt's outcome is unknown and the batch is retried. */
  requestTimeoutMs?: number;
  retry?: Partial<RetryPolicy>;
  /** Every failed attempt and every batch that fails, for the caller's logs or metrics; never a token. */
  onError?: (error: TallyError, context: ErrorContext) => void;
}

export interface ErrorContext {
  idempotencyKey: string;
  /** Attempts made so far, this one included. */
  attempt: number;
  /** True when the batch will be sent again. */
  willRetry: boolean;
}

const BATCHING_DEFAULTS = {
  maxBatchSize: 1_000,
  maxWaitMs: 10,
  maxBuffered: 10_000,
  maxInFlight: 4,
  maxKeyLength: 256,
  requestTimeoutMs: 10_000,
};

export type BatchingOptions = typeof BATCHING_DEFAULTS;

/** The batching limits with their defaults filled in; a value out of range throws at construction. */
export function batchingOptions(options: TallyClientOptions): BatchingOptions {
  const resolved = { ...BATCHING_DEFAULTS };
  for (const name of Object.keys(BATCHING_DEFAULTS) as (keyof BatchingOptions)[]) {
    const value = options[name];
    if (value === undefined) continue;
    const least = name === "maxWaitMs" ? 0 : 1;
    if (!Number.isInteger(value) || value < least) {
      throw new TypeError(`${name} must be an integer of at least ${least}, not ${value}`);
    }
    resolved[name] = value;
  }
  return resolved;
}

export function retryPolicy(overrides: Partial<RetryPolicy> = {}): RetryPolicy {
  const policy = { ...DEFAULT_RETRY, ...overrides };
  for (const name of ["budgetMs", "baseDelayMs", "maxDelayMs"] as const) {
    const value = policy[name];
    if (!Number.isInteger(value) || value < 0) {
      throw new TypeError(`retry.${name} must be a whole number of milliseconds, not ${value}`);
    }
  }
  return policy;
}
