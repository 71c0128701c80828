import { createHmac } from "node:crypto";
import fc from "fast-check";
import { decodeProtectedHeader, errors, jwtVerify } from "jose";
import { describe, expect, it } from "vitest";
import { createTokenVerifier } from "../../api/middleware/auth/verifier.ts";
import { assembleJwt, base64UrlEncodeText, HS256_HEADER, tallyClaims } from "../../k6/jwt.js";

// The k6 scripts mint their tokens with k6/jwt.js and k6's HMAC (crypto.hmac(..., "base64rawurl"), i.e. the
// MAC base64url-encoded without padding). Node's createHmac(...).digest("base64url") is the same function,
// so these tests check everything the scripts build except the primitive itself, against jose and against
// tally's own verifier.

const SECRET = "k6-test-secret-that-is-at-least-32-characters";
const hmacBase64Url = (secret: string) => (signingInput: string) =>
  createHmac("sha256", secret).update(signingInput).digest("base64url");
const now = () => Math.floor(Date.now() / 1000);

function mint(claims: Partial<Parameters<typeof tallyClaims>[0]> = {}, secret = SECRET) {
  return assembleJwt(
    HS256_HEADER,
    tallyClaims({
      subject: "k6-load-0",
      scopes: ["counters:write", "counters:read"],
      ttlSeconds: 600,
      nowSeconds: now(),
      ...claims,
    }),
    hmacBase64Url(secret),
  );
}

describe("k6 JWT assembly", () => {
  it("produces an HS256 token jose verifies, with the claims tally needs", async () => {
    const token = mint({ subject: "k6-load-3" });
    expect(decodeProtectedHeader(token)).toEqual({ alg: "HS256", typ: "JWT" });
    const { payload } = await jwtVerify(token, new TextEncoder().encode(SECRET), {
      algorithms: ["HS256"],
      requiredClaims: ["exp", "sub"],
    });
    expect(payload.sub).toBe("k6-load-3");
    expect(payload.scope).toBe("counters:write counters:read");
    expect(payload.exp).toBe((payload.iat ?? 0) + 600);
    expect(payload).not.toHaveProperty("iss");
    expect(payload).not.toHaveProperty("aud");
  });

  it("is accepted by tally's verifier, issuer and audience included", async () => {
    const verify = createTokenVerifier({
      mode: "hs256",
      secret: SECRET,
      issuer: "https://issuer.example",
      audience: "tally",
      isDevelopmentSecret: false,
    });
    const token = mint({ issuer: "https://issuer.example", audience: "tally" });
    const verified = await verify(token);
    expect(verified.subject).toBe("k6-load-0");
    expect([...verified.scopes].sort()).toEqual(["counters:read", "counters:write"]);
  });

  it("is refused when signed with another secret or expired", async () => {
    const key = new TextEncoder().encode(SECRET);
    await expect(jwtVerify(mint({}, `${SECRET}-other`), key)).rejects.toBeInstanceOf(
      errors.JWSSignatureVerificationFailed,
    );
    await expect(jwtVerify(mint({ nowSeconds: now() - 3600, ttlSeconds: 60 }), key)).rejects.toBeInstanceOf(
      errors.JWTExpired,
    );
  });

  it("signs exactly the two encoded parts and appends the signature as given", () => {
    const seen: string[] = [];
    const token = assembleJwt({ alg: "HS256" }, { sub: "é🙂" }, (input) => {
      seen.push(input);
      return "SIG";
    });
    const [header, payload, signature] = token.split(".");
    expect(seen).toEqual([`${header}.${payload}`]);
    expect(signature).toBe("SIG");
    expect(Buffer.from(payload ?? "", "base64url").toString("utf8")).toBe('{"sub":"é🙂"}');
  });

  it("encodes text as unpadded base64url of its UTF-8 bytes, like Buffer, lone surrogates included", () => {
    const codeUnits = fc
      .array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 40 })
      .map((units) => String.fromCharCode(...units));
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: "binary" }), codeUnits), (text) => {
        const encoded = base64UrlEncodeText(text);
        expect(encoded).toBe(Buffer.from(text, "utf8").toString("base64url"));
        expect(encoded).toMatch(/^[A-Za-z0-9_-]*$/);
      }),
      { numRuns: 500 },
    );
  });

  it("leaves iss and aud out unless configured", () => {
    const base = { subject: "s", scopes: ["counters:read"], ttlSeconds: 1, nowSeconds: 10 };
    expect(tallyClaims({ ...base, issuer: "", audience: undefined })).toEqual({
      sub: "s",
      scope: "counters:read",
      iat: 10,
      exp: 11,
    });
  });
});
