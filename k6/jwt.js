// JWT assembly with no imports at all, so that k6 (through lib.js) and Node (test/k6/jwt.test.ts) load the
// same code: each runtime has its own HMAC primitive, so the signature comes in as a function and this file
// only decides what gets signed and how the three parts are encoded (RFC 7515 compact serialisation).

const BASE64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/**
 * UTF-8 bytes of a string. Written out by hand because k6's JavaScript runtime has no TextEncoder; a lone
 * surrogate becomes U+FFFD, as TextEncoder and Node's Buffer do.
 * @param {string} text
 * @returns {number[]}
 */
function utf8Bytes(text) {
  /** @type {number[]} */
  const bytes = [];
  for (let i = 0; i < text.length; i++) {
    let codePoint = text.charCodeAt(i);
    if (codePoint >= 0xd800 && codePoint <= 0xdbff) {
      const low = i + 1 < text.length ? text.charCodeAt(i + 1) : 0;
      if (low >= 0xdc00 && low <= 0xdfff) {
        codePoint = 0x10000 + ((codePoint - 0xd800) << 10) + (low - 0xdc00);
        i++;
      } else {
        codePoint = 0xfffd;
      }
    } else if (codePoint >= 0xdc00 && codePoint <= 0xdfff) {
      codePoint = 0xfffd;
    }
    if (codePoint < 0x80) {
      bytes.push(codePoint);
    } else if (codePoint < 0x800) {
      bytes.push(0xc0 | (codePoint >> 6), 0x80 | (codePoint & 0x3f));
    } else if (codePoint < 0x10000) {
      bytes.push(0xe0 | (codePoint >> 12), 0x80 | ((codePoint >> 6) & 0x3f), 0x80 | (codePoint & 0x3f));
    } else {
      bytes.push(
        0xf0 | (codePoint >> 18),
        0x80 | ((codePoint >> 12) & 0x3f),
        0x80 | ((codePoint >> 6) & 0x3f),
        0x80 | (codePoint & 0x3f),
      );
    }
  }
  return bytes;
}

/**
 * The UTF-8 bytes of `text` in base64url without padding, the encoding JWS uses for every part
 * (RFC 7515 §2). Equal to Node's `Buffer.from(text).toString("base64url")`.
 * @param {string} text
 * @returns {string}
 */
export function base64UrlEncodeText(text) {
  const bytes = utf8Bytes(text);
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const b0 = /** @type {number} */ (bytes[i]);
    const b1 = i + 1 < bytes.length ? /** @type {number} */ (bytes[i + 1]) : 0;
    const b2 = i + 2 < bytes.length ? /** @type {number} */ (bytes[i + 2]) : 0;
    const triple = (b0 << 16) | (b1 << 8) | b2;
    out += BASE64URL_ALPHABET.charAt((triple >> 18) & 63) + BASE64URL_ALPHABET.charAt((triple >> 12) & 63);
    if (i + 1 < bytes.length) out += BASE64URL_ALPHABET.charAt((triple >> 6) & 63);
    if (i + 2 < bytes.length) out += BASE64URL_ALPHABET.charAt(triple & 63);
  }
  return out;
}

/**
 * A compact JWS: base64url(header) "." base64url(payload) "." signature, where `signBase64Url` receives
 * that exact ASCII signing input and must return the MAC over it, base64url-encoded without padding.
 * @param {Record<string, unknown>} header
 * @param {Record<string, unknown>} payload
 * @param {(signingInput: string) => string} signBase64Url
 * @returns {string}
 */
export function assembleJwt(header, payload, signBase64Url) {
  const signingInput = `${base64UrlEncodeText(JSON.stringify(header))}.${base64UrlEncodeText(JSON.stringify(payload))}`;
  return `${signingInput}.${signBase64Url(signingInput)}`;
}

/**
 * The claims tally's verifier wants: `sub` (the client id the rate limiter counts against), a space-separated
 * `scope`, and `exp`, which tally requires; `iss`/`aud` only when the service is configured to check them.
 * @param {{ subject: string, scopes: readonly string[], ttlSeconds: number, nowSeconds: number,
 *   issuer?: string | undefined, audience?: string | undefined }} options
 * @returns {Record<string, unknown>}
 */
export function tallyClaims(options) {
  /** @type {Record<string, unknown>} */
  const claims = {
    sub: options.subject,
    scope: options.scopes.join(" "),
    iat: options.nowSeconds,
    exp: options.nowSeconds + options.ttlSeconds,
  };
  if (options.issuer) claims.iss = options.issuer;
  if (options.audience) claims.aud = options.audience;
  return claims;
}

/**
 * The protected header of every token minted here; tally pins HS256 and rejects anything else.
 * @type {Readonly<{ alg: "HS256", typ: "JWT" }>}
 */
export const HS256_HEADER = Object.freeze({ alg: "HS256", typ: "JWT" });
