/** How a batch is retried when its outcome is unknown (connection error, timeout, 5xx) or it was rate limited. */
export interface RetryPolicy {
  /**
   * How long a batch is retried for, from its first attempt, in milliseconds. A failover, or an API node
   * restarted, takes seconds to tens of seconds: within this budget the callers never see it.
   */
  budgetMs: number;
  /** The first retry waits up to this; each later one up to twice the one before. */
  baseDelayMs: number;
  /** No wait is longer, unless the service's Retry-After asks for more. */
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { budgetMs: 60_000, baseDelayMs: 50, maxDelayMs: 2_000 };

/**
 * Exponential backoff with full jitter: a uniform wait between 0 and the attempt's cap, so that clients
 * that failed together do not retry together. `retry` counts from 1.
 */
export function backoffMs(policy: RetryPolicy, retry: number, random: () => number = Math.random): number {
  const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(retry - 1, 30));
  return Math.floor(random() * cap);
}

/**
 * How long the service asked the client to wait: Retry-After in seconds or as an HTTP date, else the `t`
 * of an IETF RateLimit field (seconds until the quota resets); undefined when it said nothing.
 */
export function serverDelayMs(headers: Headers, now: number = Date.now()): number | undefined {
  const retryAfter = headers.get("retry-after")?.trim();
  if (retryAfter !== undefined && retryAfter !== "") {
    if (/^\d+$/.test(retryAfter)) return Number(retryAfter) * 1_000;
    const date = Date.parse(retryAfter);
    if (!Number.isNaN(date)) return Math.max(0, date - now);
  }
  const reset = /;\s*t=(\d+)/.exec(headers.get("ratelimit") ?? "")?.[1];
  return reset === undefined ? undefined : Number(reset) * 1_000;
}
