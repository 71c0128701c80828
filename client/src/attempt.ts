import type { SealedBatch } from "./batch.ts";
import { TallyError, TallyRejectedError } from "./errors.ts";
import { problemOf } from "./request.ts";
import { serverDelayMs } from "./retry.ts";
import type { BearerToken } from "./token.ts";

/** What one attempt learnt. */
export type Attempt =
  | { kind: "accepted" }
  | { kind: "unknown"; error: TallyError; delayMs?: number }
  /** Nothing reached the service (no token, a connection refused): safe to retry, and no ambiguity. */
  | { kind: "unsent"; error: TallyError }
  | { kind: "limited"; error: TallyRejectedError; delayMs?: number }
  /** `token`: the one refused, so that a token another batch has fetched meanwhile is kept. */
  | { kind: "unauthorized"; error: TallyRejectedError; token: string }
  | { kind: "rejected"; error: TallyRejectedError };

/** Sends `batch` once and says what came of it; never throws. */
export async function attemptDelivery(
  url: string,
  bearer: BearerToken,
  batch: SealedBatch,
  timeoutMs: number,
): Promise<Attempt> {
  let token: string;
  try {
    token = await bearer.get(timeoutMs);
  } catch (error) {
    return { kind: "unsent", error: new TallyError("no token to send the batch with", { cause: error }) };
  }
  let response: Response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: {
        authorization: `Bearer ${token}`,
        "content-type": "application/json",
        "idempotency-key": batch.idempotencyKey,
      },
      body: batch.body,
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (error) {
    // Refused before a byte was sent (no node listening, a name that does not resolve): it cannot have
    // been applied, so the retry settles it. Reset or timed out: the service may have applied it.
    const failure = new TallyError("the request failed", { cause: error });
    return isUnsent(error) ? { kind: "unsent", error: failure } : { kind: "unknown", error: failure };
  }
  if (response.status === 202) {
    // Accepted whatever happens to the (empty) body now: a timeout firing after the answer is not a failure.
    await response.body?.cancel().catch(() => {});
    return { kind: "accepted" };
  }
  const problem = await problemOf(response);
  const delayMs = serverDelayMs(response.headers);
  if (response.status >= 500) {
    return {
      kind: "unknown",
      error: new TallyError(`tally answered ${response.status} ${problem.code ?? ""}`.trim()),
      delayMs,
    };
  }
  const error = new TallyRejectedError(problem);
  if (response.status === 429) return { kind: "limited", error, delayMs };
  if (response.status === 401) return { kind: "unauthorized", error, token };
  return { kind: "rejected", error };
}

// Errors fetch reports (as its error's cause) when no connection was made, so no request went out.
const UNSENT_CODES = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "UND_ERR_CONNECT_TIMEOUT"]);

function isUnsent(error: unknown): boolean {
  const code = (error as { cause?: { code?: unknown } } | null)?.cause?.code;
  return typeof code === "string" && UNSENT_CODES.has(code);
}
