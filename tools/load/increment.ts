/**
 * One increment sent the way every load generator here sends it, and what the client learnt: accepted
 * (202: counted exactly once), rejected (4xx: never counted) or unknown (5xx, timeout, connection lost:
 * counted once or not at all, never twice).
 */
export type Outcome = "accepted" | "rejected" | "unknown";

export interface SendResult {
  outcome: Outcome;
  /** undefined when no answer came. */
  status: number | undefined;
}

export function sendIncrement(
  target: string,
  token: string,
  increment: { key: string; value: number },
  timeoutMs: number,
): Promise<SendResult> {
  return send(`${target}/increment`, timeoutMs, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(increment),
  });
}

/** A reset (DELETE /counters/{key}), with an Idempotency-Key so that a retry applies it at most once. */
export function sendReset(
  target: string,
  token: string,
  key: string,
  idempotencyKey: string,
  timeoutMs: number,
): Promise<SendResult> {
  return send(`${target}/counters/${encodeURIComponent(key)}`, timeoutMs, {
    method: "DELETE",
    headers: { authorization: `Bearer ${token}`, "idempotency-key": idempotencyKey },
  });
}

async function send(url: string, timeoutMs: number, init: RequestInit): Promise<SendResult> {
  try {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
    await response.arrayBuffer();
    const outcome: Outcome =
      response.status === 202 ? "accepted" : response.status < 500 ? "rejected" : "unknown";
    return { outcome, status: response.status };
  } catch {
    // Connection refused, reset or timed out: the client cannot know whether Redis took it.
    return { outcome: "unknown", status: undefined };
  }
}

/**
 * Per key, what clients were told, summed: enough to check the one promise that matters without keeping
 * every request (a long soak sends millions). Recorded in the order each key's requests were sent; a key's
 * resets and increments must come from one client at a time for that order to be the order they applied in.
 */
export class Accounting {
  readonly #byKey = new Map<string, KeyAccount>();

  record(key: string, value: number, outcome: Outcome): void {
    const entry = this.#entry(key);
    if (outcome === "accepted") entry.accepted += BigInt(value);
    if (outcome === "unknown") entry.unknown += BigInt(value);
  }

  /** A reset of the key: one accepted discards everything accepted before it. */
  recordReset(key: string, outcome: Outcome): void {
    const entry = this.#entry(key);
    if (outcome === "accepted") entry.accepted = 0n;
    if (outcome === "unknown") entry.unknownReset = true;
  }

  #entry(key: string): KeyAccount {
    let entry = this.#byKey.get(key);
    if (entry === undefined) {
      entry = { accepted: 0n, unknown: 0n, unknownReset: false };
      this.#byKey.set(key, entry);
    }
    return entry;
  }

  get keys(): number {
    return this.#byKey.size;
  }

  /**
   * Every way Postgres disagrees with what the clients were told, as readable lines (empty = exactly once):
   * accepted counted exactly once, rejected never, unknown once or not at all.
   */
  violations(persisted: Map<string, bigint>): string[] {
    const violations: string[] = [];
    for (const [key, { accepted, unknown, unknownReset }] of this.#byKey) {
      const value = persisted.get(key) ?? 0n;
      // A reset whose outcome is unknown may have discarded anything accepted, up to the last answer.
      const atLeast = unknownReset ? 0n : accepted;
      if (value < atLeast)
        violations.push(`${key}: ${value} in Postgres, but ${accepted} was accepted (lost)`);
      if (value > accepted + unknown) {
        violations.push(
          `${key}: ${value} in Postgres, more than accepted ${accepted} + unknown ${unknown} (doubled)`,
        );
      }
    }
    for (const key of persisted.keys()) {
      if (!this.#byKey.has(key)) violations.push(`${key}: in Postgres but never sent`);
    }
    return violations;
  }
}

interface KeyAccount {
  /** Accepted increments since the last accepted reset. */
  accepted: bigint;
  /**
   * Every increment whose outcome is unknown, also before the last reset: one may have landed after it (its
   * request timed out at the client while still on its way to Redis).
   */
  unknown: bigint;
  /** A reset with an unknown outcome: it may have applied, also after the increments sent after it. */
  unknownReset: boolean;
}
