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

export async function sendIncrement(
  target: string,
  token: string,
  increment: { key: string; value: number },
  timeoutMs: number,
): Promise<SendResult> {
  try {
    const response = await fetch(`${target}/increment`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify(increment),
      signal: AbortSignal.timeout(timeoutMs),
    });
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
 * every request (a long soak sends millions).
 */
export class Accounting {
  readonly #byKey = new Map<string, { accepted: bigint; unknown: bigint }>();

  record(key: string, value: number, outcome: Outcome): void {
    if (outcome === "rejected") {
      if (!this.#byKey.has(key)) this.#byKey.set(key, { accepted: 0n, unknown: 0n });
      return;
    }
    const entry = this.#byKey.get(key) ?? { accepted: 0n, unknown: 0n };
    entry[outcome] += BigInt(value);
    this.#byKey.set(key, entry);
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
    for (const [key, { accepted, unknown }] of this.#byKey) {
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
      if (!this.#byKey.has(key)) violations.push(`${key}: in Postgres but never sent`);
    }
    return violations;
  }
}
