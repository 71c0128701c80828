/** A bearer token, or a function that gets a fresh one (from an identity provider, a vault, a file). */
export type TokenSource = string | (() => string | Promise<string>);

// A token this close to its `exp` is replaced before it is sent: a request in flight must not outlive it.
const REFRESH_BEFORE_EXPIRY_MS = 30_000;

/**
 * The token the client sends. One from a function is fetched once, reused, fetched again shortly before
 * its `exp` (read from the JWT's payload, not verified: that is the service's job) and after a 401.
 * Concurrent requests share one fetch.
 */
export class BearerToken {
  readonly #source: TokenSource;
  #current: { token: string; refreshAt: number } | undefined;
  #fetching: Promise<string> | undefined;

  constructor(source: TokenSource) {
    this.#source = source;
  }

  /** False for a fixed string: after a 401 there is nothing else to try. */
  get refreshable(): boolean {
    return typeof this.#source === "function";
  }

  /** The token to send; a source that takes longer than `timeoutMs` fails the attempt, not the client. */
  async get(timeoutMs: number, now: number = Date.now()): Promise<string> {
    const source = this.#source;
    if (typeof source === "string") return source;
    if (this.#current !== undefined && now < this.#current.refreshAt) return this.#current.token;
    this.#fetching ??= (async () => {
      try {
        const token = await withTimeout(Promise.resolve(source()), timeoutMs);
        this.#current = { token, refreshAt: refreshTimeOf(token) };
        return token;
      } finally {
        this.#fetching = undefined;
      }
    })();
    return this.#fetching;
  }

  /** The service refused `token` (401): the next `get()` fetches another, unless one already replaced it. */
  invalidate(token: string): void {
    if (this.#current?.token === token) this.#current = undefined;
  }
}

/** When to replace a token: shortly before its `exp`, or never when it has none (or is no JWT). */
function refreshTimeOf(token: string): number {
  const payload = token.split(".")[1];
  if (payload === undefined) return Number.POSITIVE_INFINITY;
  try {
    const { exp } = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as { exp?: unknown };
    return typeof exp === "number" ? exp * 1_000 - REFRESH_BEFORE_EXPIRY_MS : Number.POSITIVE_INFINITY;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`the token source did not answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
