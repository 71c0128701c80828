import type { TokenVerifier, VerifiedToken } from "./verifier.ts";

export interface TokenCacheOptions {
  /** Bound on memory: past it the least recently verified token is dropped. */
  maxEntries?: number;
  now?: () => number;
}

/**
 * Remembers tokens that verified, until they expire. A client sends the same token with every request, and
 * verifying it (base64url, JSON, an HMAC or signature check through WebCrypto) was the largest single cost
 * of an increment. The key is the whole token, signature included, so only the exact bytes that verified
 * hit the cache; a token is never served past its `exp`. Failures are not cached: a bad token costs a
 * verification every time, as before.
 */
export function cacheVerifiedTokens(verify: TokenVerifier, options: TokenCacheOptions = {}): TokenVerifier {
  const maxEntries = options.maxEntries ?? 10_000;
  const now = options.now ?? Date.now;
  const cache = new Map<string, VerifiedToken>();

  return async function verifyCached(token) {
    const cached = cache.get(token);
    if (cached !== undefined) {
      if (now() < cached.expiresAt) return cached;
      cache.delete(token);
    }
    const verified = await verify(token);
    if (cache.size >= maxEntries) {
      // Maps iterate in insertion order: the first key is the one verified longest ago.
      const oldest = cache.keys().next();
      if (!oldest.done) cache.delete(oldest.value);
    }
    cache.set(token, verified);
    return verified;
  };
}
