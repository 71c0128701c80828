import { SignJWT } from "jose";
import * as v from "valibot";
import { MAX_KEY_BYTES } from "./settings.ts";

/**
 * What a token's `sub` may be: it becomes the client id, a log field and part of Redis keys, so it is
 * bounded and holds nothing that could split a log line or a header (visible ASCII only).
 */
export const SUBJECT_PATTERN = /^[\x21-\x7E]{1,255}$/;

/**
 * The claim that confines a token to counter keys starting with one of its strings. A token without it
 * reaches every key; one with an empty list reaches none. Named for this service, so that an identity
 * provider's own claims cannot collide with it.
 */
export const PREFIXES_CLAIM = "tally_prefixes";

/** Most prefixes one token may carry: each is checked against every key a request touches. */
export const MAX_TOKEN_PREFIXES = 100;

/**
 * The prefixes claim: strings a key could start with (non-empty, no NUL, well-formed Unicode, no longer
 * than a key may be in bytes). Compared with keys code unit by code unit: no case folding, no Unicode
 * normalisation, no pattern characters.
 */
export const PREFIXES_SCHEMA = v.pipe(
  v.array(
    v.pipe(
      v.string(),
      v.nonEmpty(),
      v.maxBytes(MAX_KEY_BYTES),
      v.check((prefix) => !prefix.includes("\u0000") && prefix.isWellFormed()),
    ),
  ),
  v.maxLength(MAX_TOKEN_PREFIXES),
);

export const PREFIXES_RULE = `an array of at most ${MAX_TOKEN_PREFIXES} non-empty strings, each at most ${MAX_KEY_BYTES} bytes in UTF-8, well-formed, without NUL`;

export interface MintOptions {
  secret: string;
  subject: string;
  scopes: readonly string[];
  /** Confines the token to keys starting with one of these (the tally_prefixes claim); none: every key. */
  prefixes?: readonly string[];
  /** Lifetime in seconds; tally requires `exp` on every token. */
  ttlSeconds?: number;
  issuer?: string;
  audience?: string;
}

/** Signs an HS256 token tally accepts. Used by `npm run token`, the tests and the benchmarks. */
export async function mintToken(options: MintOptions): Promise<string> {
  const claims: Record<string, unknown> = { scope: options.scopes.join(" ") };
  if (options.prefixes !== undefined) claims[PREFIXES_CLAIM] = v.parse(PREFIXES_SCHEMA, options.prefixes);
  let jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(options.subject)
    .setIssuedAt()
    .setExpirationTime(`${options.ttlSeconds ?? 3_600}s`);
  if (options.issuer) jwt = jwt.setIssuer(options.issuer);
  if (options.audience) jwt = jwt.setAudience(options.audience);
  return jwt.sign(new TextEncoder().encode(options.secret));
}
