// Types of jwt.js for the root TypeScript project, which does not compile JavaScript (no allowJs) yet has
// test/k6/jwt.test.ts import it. Keep in step with the JSDoc in jwt.js; the test exercises every export.

export function base64UrlEncodeText(text: string): string;

export function assembleJwt(
  header: Record<string, unknown>,
  payload: Record<string, unknown>,
  signBase64Url: (signingInput: string) => string,
): string;

export function tallyClaims(options: {
  subject: string;
  scopes: readonly string[];
  ttlSeconds: number;
  nowSeconds: number;
  issuer?: string | undefined;
  audience?: string | undefined;
}): Record<string, unknown>;

export const HS256_HEADER: Readonly<{ alg: "HS256"; typ: "JWT" }>;
