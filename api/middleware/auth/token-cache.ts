import { LRUCache } from "lru-cache";
import type { TokenVerifier, VerifiedToken } from "./verifier.ts";

export interface TokenCacheOptions {
  /** Most tokens remembered; past it the least recently used is dropped. */
  maxEntries?: number;
  /** Most bytes remembered (tokens and what they verified to), whatever their count. */
  maxBytes?: number;
  /**
   * Longest a token is served from memory before it is verified again. Bounds how long a token outlives the
   * withdrawal of its signing key (plus the JWKS cache's own age, see verifier.ts).
   */
  maxAgeMs?: number;
  /** Clock for expiry checks, in ms since the epoch; and for the cache's own ages, in ms of any origin. */
  now?: () => number;
}

const DEFAULT_MAX_ENTRIES = 10_000;
const DEFAULT_MAX_BYTES = 16 * 1024 * 1024;
const DEFAULT_MAX_AGE_MS = 60_000;
// What an entry costs besides its strings: the cache's own bookkeeping, the scope set, the object.
const ENTRY_OVERHEAD_BYTES = 200;

/**
 * Remembers tokens that verified, until they expire or `maxAgeMs` passes. A client sends the same token
 * with every request, and verifying it (base64url, JSON, an HMAC or signature check through WebCrypto) was
 * the largest single cost of an increment. The key is the whole token, signature included, so only the
 * exact bytes that verified hit the cache; a token is never served past its `exp`. Failures are not cached:
 * a bad token costs a verification every time, as before. Bounded in entries and in bytes, so that large
 * tokens cannot grow a worker's memory (lru-cache keeps the byte count and the per-entry ages).
 */
export function cacheVerifiedTokens(verify: TokenVerifier, options: TokenCacheOptions = {}): TokenVerifier {
  const now = options.now ?? Date.now;
  const cache = new LRUCache<string, VerifiedToken>({
    max: options.maxEntries ?? DEFAULT_MAX_ENTRIES,
    maxSize: options.maxBytes ?? DEFAULT_MAX_BYTES,
    // UTF-16 strings: two bytes a character.
    sizeCalculation: (verified, token) =>
      2 * (token.length + verified.subject.length + (verified.prefixes?.join("").length ?? 0)) +
      ENTRY_OVERHEAD_BYTES,
    ttl: options.maxAgeMs ?? DEFAULT_MAX_AGE_MS,
    // Ages are checked when an entry is read, against the clock read then: no timer per entry, and none
    // for a cached clock either.
    ttlAutopurge: false,
    ttlResolution: 0,
    perf: { now },
  });

  return async function verifyCached(token) {
    const cached = cache.get(token);
    if (cached !== undefined) {
      if (now() < cached.expiresAt) return cached;
      cache.delete(token);
    }
    const verified = await verify(token);
    cache.set(token, verified);
    return verified;
  };
}
