import { setTimeout as sleep } from "node:timers/promises";
import { type Problem, TallyError, TallyRejectedError } from "./errors.ts";
import { backoffMs, type RetryPolicy, serverDelayMs } from "./retry.ts";
import type { BearerToken } from "./token.ts";

// A Retry-After longer than this is not waited out in one go.
const MAX_SERVER_DELAY_MS = 60_000;

export interface ServiceRequest {
  method: "GET" | "POST" | "DELETE";
  url: string;
  body?: string;
  /** Sent on every attempt, so that a write retried after a lost answer applies once. */
  idempotencyKey?: string;
}

/** What a request needs from the client that sends it. */
export interface Sender {
  token: BearerToken;
  retry: RetryPolicy;
  requestTimeoutMs: number;
}

/**
 * The service did not answer a read or a reset within the retry budget (down, overloaded, failing over). A
 * reset was applied once or not at all: `reset(key, { idempotencyKey })` with this key settles it.
 */
export class TallyUnavailableError extends TallyError {
  override name = "TallyUnavailableError";
  constructor(
    readonly idempotencyKey: string | undefined,
    cause: unknown,
  ) {
    super(`tally did not answer in time (${cause instanceof Error ? cause.message : String(cause)})`, {
      cause,
    });
  }
}

/**
 * Sends a request until the service answers it with a 2xx or a 4xx (other than 429, and a 401 after one
 * token refresh), retrying a 5xx, a 429 and a failed connection within the retry budget. Resolves with the
 * 2xx or 404 response; rejects with a TallyRejectedError for another 4xx and a TallyUnavailableError when
 * the budget runs out. Only reads and writes with an Idempotency-Key may come here: both are safe to repeat.
 */
export async function sendWithRetries(sender: Sender, request: ServiceRequest): Promise<Response> {
  const giveUpAt = performance.now() + sender.retry.budgetMs;
  let refreshedToken = false;
  for (let attempt = 1; ; attempt++) {
    let delayMs = 0;
    let failure: unknown;
    try {
      const token = await sender.token.get(sender.requestTimeoutMs);
      const response = await fetch(request.url, {
        method: request.method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(request.body === undefined ? {} : { "content-type": "application/json" }),
          ...(request.idempotencyKey === undefined ? {} : { "idempotency-key": request.idempotencyKey }),
        },
        body: request.body,
        signal: AbortSignal.timeout(sender.requestTimeoutMs),
      });
      if (response.ok || response.status === 404) return response;
      const problem = await problemOf(response);
      if (response.status === 401 && sender.token.refreshable && !refreshedToken) {
        refreshedToken = true;
        sender.token.invalidate(token);
        continue;
      }
      if (response.status < 500 && response.status !== 429) throw new TallyRejectedError(problem);
      delayMs = Math.min(serverDelayMs(response.headers) ?? 0, MAX_SERVER_DELAY_MS);
      failure = new TallyError(`tally answered ${response.status} ${problem.code ?? ""}`.trim());
    } catch (error) {
      if (error instanceof TallyRejectedError) throw error;
      failure = error;
    }
    const delay = Math.max(backoffMs(sender.retry, attempt), delayMs);
    if (performance.now() + delay >= giveUpAt)
      throw new TallyUnavailableError(request.idempotencyKey, failure);
    await sleep(delay);
  }
}

export async function problemOf(response: Response): Promise<Problem> {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text) as Partial<Problem>;
    return { ...body, status: response.status };
  } catch {
    return { status: response.status, detail: text.slice(0, 200) };
  }
}
