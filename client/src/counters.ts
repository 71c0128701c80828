import { randomUUID } from "node:crypto";
import { TallyError } from "./errors.ts";
import { type Sender, sendWithRetries } from "./request.ts";

/** One counter as the service reads it; exact beyond 2^53. */
export interface CounterReading {
  key: string;
  /** The total in Postgres. */
  persisted: bigint;
  /** What Redis holds that Postgres does not yet. */
  pending: bigint;
  /** persisted + pending: the counter's value. */
  total: bigint;
  /** Every increment accepted before this instant is in `persisted`; null before the first sync. */
  persistedAsOf: Date | null;
}

export interface CounterPage {
  counters: CounterReading[];
  /** Pass it as `cursor` for the next page; null on the last. */
  nextCursor: string | null;
}

export interface ListOptions {
  /** Keys that start with it; "" (the default) lists every key. */
  prefix?: string;
  /** Keys a page looks at, 1 to 1,000 (100 by default). */
  limit?: number;
  cursor?: string | null;
}

/** The most keys one POST /read takes; readMany sends more in several. */
const MAX_READ_KEYS = 1_000;

/** The reads and the reset, each one request retried within the client's retry budget. */
export class Counters {
  readonly #base: string;
  readonly #sender: Sender;

  constructor(base: string, sender: Sender) {
    this.#base = base;
    this.#sender = sender;
  }

  /** The counter, or null when nothing counts for it (never counted, or reset since). */
  async read(key: string): Promise<CounterReading | null> {
    const response = await this.#send("GET", `counters/${encodeURIComponent(key)}`);
    if (response.status === 404) return null;
    return readingOf(parseExact(await response.text()));
  }

  /** Every key's reading, in the order asked; a key nothing counts for reads as zeros. */
  async readMany(keys: readonly string[]): Promise<CounterReading[]> {
    const readings: CounterReading[] = [];
    for (let start = 0; start < keys.length; start += MAX_READ_KEYS) {
      const body = JSON.stringify({ keys: keys.slice(start, start + MAX_READ_KEYS) });
      const response = await this.#send("POST", "read", body);
      readings.push(...countersOf(parseExact(await response.text())));
    }
    return readings;
  }

  /** One page of the counters under a prefix, in key order. */
  async list(options: ListOptions = {}): Promise<CounterPage> {
    const query = new URLSearchParams({ prefix: options.prefix ?? "" });
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    if (options.cursor != null) query.set("cursor", options.cursor);
    const page = parseExact(await (await this.#send("GET", `counters?${query}`)).text());
    const nextCursor = (page as { nextCursor?: unknown }).nextCursor;
    if (nextCursor !== null && typeof nextCursor !== "string") throw unexpected(page);
    return { counters: countersOf(page), nextCursor };
  }

  /** Every counter under a prefix, page by page. */
  async *all(prefix = "", limit?: number): AsyncGenerator<CounterReading> {
    let cursor: string | null = null;
    do {
      const page: CounterPage = await this.list({ prefix, limit, cursor });
      yield* page.counters;
      cursor = page.nextCursor;
    } while (cursor !== null);
  }

  /**
   * Sets the counter back to zero. Sent with an Idempotency-Key (a new one unless given), so its retries
   * apply it once: a retry never discards increments counted after the first attempt.
   */
  async reset(key: string, options: { idempotencyKey?: string } = {}): Promise<void> {
    const idempotencyKey = options.idempotencyKey ?? randomUUID();
    await this.#send("DELETE", `counters/${encodeURIComponent(key)}`, undefined, idempotencyKey);
  }

  #send(method: "GET" | "POST" | "DELETE", path: string, body?: string, idempotencyKey?: string) {
    return sendWithRetries(this.#sender, {
      method,
      url: new URL(path, this.#base).href,
      body,
      idempotencyKey,
    });
  }
}

// The three totals are 64-bit integers: quoted before JSON.parse so that they reach BigInt exactly. A key
// that contains the same text is a JSON string, whose quotes are escaped, so it never matches.
const EXACT_FIELD = /([{,]"(?:persisted|pending|total)":)(-?\d+)/g;

function parseExact(text: string): unknown {
  return JSON.parse(text.replace(EXACT_FIELD, '$1"$2"'));
}

function countersOf(body: unknown): CounterReading[] {
  const counters = (body as { counters?: unknown } | null)?.counters;
  if (!Array.isArray(counters)) throw unexpected(body);
  return counters.map(readingOf);
}

function readingOf(value: unknown): CounterReading {
  const reading = value as Record<string, unknown> | null;
  const { key, persisted, pending, total, persistedAsOf } = reading ?? {};
  const exact = [persisted, pending, total];
  if (typeof key !== "string" || !exact.every((field) => typeof field === "string")) throw unexpected(value);
  if (persistedAsOf !== null && typeof persistedAsOf !== "string") throw unexpected(value);
  return {
    key,
    persisted: BigInt(persisted as string),
    pending: BigInt(pending as string),
    total: BigInt(total as string),
    persistedAsOf: persistedAsOf === null ? null : new Date(persistedAsOf),
  };
}

function unexpected(body: unknown): TallyError {
  return new TallyError(
    `tally answered what this client does not know: ${JSON.stringify(body).slice(0, 200)}`,
  );
}
