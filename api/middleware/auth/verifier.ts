import { createRemoteJWKSet, errors, type JWTVerifyOptions, jwtVerify } from "jose";
import * as v from "valibot";
import type { AuthConfig } from "../../../lib/config.ts";
import { PREFIXES_CLAIM, PREFIXES_RULE, PREFIXES_SCHEMA, SUBJECT_PATTERN } from "../../../lib/tokens.ts";

export interface VerifiedToken {
  subject: string;
  scopes: ReadonlySet<string>;
  /** The key prefixes the token is confined to; undefined: every key. */
  prefixes: readonly string[] | undefined;
  /** The token's `exp`, in ms since the epoch. */
  expiresAt: number;
}

export type TokenVerifier = (token: string) => Promise<VerifiedToken>;

/** A token that cannot be accepted; `reason` is safe to show the client. */
export class InvalidTokenError extends Error {
  override name = "InvalidTokenError";
}

/** The JWKS endpoint could not be read; the request fails with 503, not 401. */
export class KeySourceUnavailableError extends Error {
  override name = "KeySourceUnavailableError";
}

// Leeway for clocks that disagree by a few seconds between token issuer and API node.
const CLOCK_TOLERANCE_S = 5;

// RFC 7519's JWT and RFC 9068's access-token type; another typ (an ID token, a logout token, a DPoP proof)
// is a token meant for something else, however valid its signature.
const ACCEPTED_TYPES = new Set(["jwt", "at+jwt"]);

/** How long the JWKS is used before it is fetched again, so a withdrawn key stops verifying. */
const JWKS_MAX_AGE_MS = 60_000;

export interface TokenVerifierOptions {
  /** Overrides JWKS_MAX_AGE_MS (tests). */
  jwksMaxAgeMs?: number;
}

/**
 * Verifies a bearer token against the configured key: HS256 with a shared secret, or RS256/ES256 with keys
 * fetched (and cached, and re-fetched on an unknown `kid`) from a JWKS URL. Algorithms are pinned per mode,
 * so `alg: none` and key-confusion tokens are rejected by jose before any claim is read.
 */
export function createTokenVerifier(
  auth: Exclude<AuthConfig, { mode: "disabled" }>,
  verifierOptions: TokenVerifierOptions = {},
): TokenVerifier {
  const options: JWTVerifyOptions = {
    algorithms: auth.mode === "hs256" ? ["HS256"] : ["RS256", "ES256"],
    issuer: auth.issuer,
    audience: auth.audience,
    requiredClaims: ["exp", "sub"],
    clockTolerance: CLOCK_TOLERANCE_S,
  };
  const verifySignature = (() => {
    if (auth.mode === "hs256") {
      const secret = new TextEncoder().encode(auth.secret);
      return (token: string) => jwtVerify(token, secret, options);
    }
    const keySet = createRemoteJWKSet(new URL(auth.jwksUrl), {
      cacheMaxAge: verifierOptions.jwksMaxAgeMs ?? JWKS_MAX_AGE_MS,
    });
    return (token: string) => jwtVerify(token, keySet, options);
  })();

  return async function verifyToken(token) {
    try {
      const { payload, protectedHeader } = await verifySignature(token);
      // Typed as a string by jose, but it is whatever JSON the token's header holds.
      const typ: unknown = protectedHeader.typ;
      if (
        typ !== undefined &&
        (typeof typ !== "string" || !ACCEPTED_TYPES.has(typ.toLowerCase().replace(/^application\//, "")))
      ) {
        throw new InvalidTokenError("the token's typ header is not JWT or at+jwt");
      }
      const scope = payload.scope;
      if (scope !== undefined && typeof scope !== "string") {
        throw new InvalidTokenError("the scope claim must be a space-separated string");
      }
      // requiredClaims guarantees sub is present, but jose checks its type only when told the expected subject:
      // a sub of [], ["a"] or 5 would become a client id that String() merges with another client's.
      const subject: unknown = payload.sub;
      if (typeof subject !== "string" || !SUBJECT_PATTERN.test(subject))
        throw new InvalidTokenError("the sub claim must be 1 to 255 visible ASCII characters");
      // requiredClaims guarantees exp, and jose checked it is a number in the future; jose checks that iat
      // is a number when present, but not that it is in the past.
      const expiresAt = (payload.exp as number) * 1000;
      const nowSeconds = Date.now() / 1000;
      if (payload.iat !== undefined && payload.iat > nowSeconds + CLOCK_TOLERANCE_S) {
        throw new InvalidTokenError("the token was issued in the future (iat)");
      }
      const lifetimeSeconds = (payload.exp as number) - Math.min(payload.iat ?? nowSeconds, nowSeconds);
      if (
        auth.maxLifetimeSeconds !== undefined &&
        lifetimeSeconds > auth.maxLifetimeSeconds + CLOCK_TOLERANCE_S
      ) {
        throw new InvalidTokenError(
          `the token is valid for longer than the ${auth.maxLifetimeSeconds} s this service accepts (exp - iat)`,
        );
      }
      return {
        subject,
        scopes: new Set(scope?.split(" ").filter(Boolean)),
        prefixes: prefixesOf(payload),
        expiresAt,
      };
    } catch (error) {
      if (error instanceof InvalidTokenError) throw error;
      // The key server being unreachable or broken is our outage, not the client's bad token.
      if (auth.mode === "jwks" && isKeySourceFailure(error)) {
        throw new KeySourceUnavailableError("the token signing keys cannot be fetched", { cause: error });
      }
      if (error instanceof errors.JWTExpired) throw new InvalidTokenError("the token has expired");
      if (error instanceof errors.JOSEError) throw new InvalidTokenError(describe(error));
      throw error;
    }
  };
}

/** The token's prefixes claim; a claim that is there but malformed refuses the token rather than widen it. */
function prefixesOf(payload: Record<string, unknown>): readonly string[] | undefined {
  if (!(PREFIXES_CLAIM in payload)) return undefined;
  const parsed = v.safeParse(PREFIXES_SCHEMA, payload[PREFIXES_CLAIM]);
  if (!parsed.success) throw new InvalidTokenError(`the ${PREFIXES_CLAIM} claim must be ${PREFIXES_RULE}`);
  return parsed.output;
}

function isKeySourceFailure(error: unknown): boolean {
  if (error instanceof errors.JWKSTimeout || error instanceof errors.JWKSInvalid) return true;
  // jose reports a non-200 or unparsable JWKS response with its generic error class, and a refused
  // connection with fetch's own TypeError; every token problem has a more specific class.
  if (error instanceof errors.JOSEError) return error.code === "ERR_JOSE_GENERIC";
  return true;
}

function describe(error: errors.JOSEError): string {
  if (error instanceof errors.JWTClaimValidationFailed) return `claim check failed: ${error.message}`;
  if (error instanceof errors.JWSSignatureVerificationFailed) return "the signature does not verify";
  if (error instanceof errors.JOSEAlgNotAllowed) return "the token's algorithm is not accepted";
  if (error instanceof errors.JWKSNoMatchingKey) return "no key matches the token's kid";
  return "the token is malformed";
}
