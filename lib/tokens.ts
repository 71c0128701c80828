import { SignJWT } from "jose";

/**
 * What a token's `sub` may be: it becomes the client id, a log field and part of Redis keys, so it is
 * bounded and holds nothing that could split a log line or a header (visible ASCII only).
 */
export const SUBJECT_PATTERN = /^[\x21-\x7E]{1,255}$/;

export interface MintOptions {
  secret: string;
  subject: string;
  scopes: readonly string[];
  /** Lifetime in seconds; tally requires `exp` on every token. */
  ttlSeconds?: number;
  issuer?: string;
  audience?: string;
}

/** Signs an HS256 token tally accepts. Used by `npm run token`, the tests and the benchmarks. */
export async function mintToken(options: MintOptions): Promise<string> {
  let jwt = new SignJWT({ scope: options.scopes.join(" ") })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(options.subject)
    .setIssuedAt()
    .setExpirationTime(`${options.ttlSeconds ?? 3_600}s`);
  if (options.issuer) jwt = jwt.setIssuer(options.issuer);
  if (options.audience) jwt = jwt.setAudience(options.audience);
  return jwt.sign(new TextEncoder().encode(options.secret));
}
