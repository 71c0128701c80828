import { createHmac } from "node:crypto";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Problem } from "../../api/problem.ts";
import { shardKeys } from "../../lib/redis/keyspace.ts";
import { createTestApi, TEST_SECRET, type TestApi } from "../support/api.ts";

// Invariant 2 of the contract, driven by fast-check through the real app on a real Redis: whatever a broken or
// hostile client sends, the answer is never a 5xx, every error is problem+json whose `status` is the HTTP
// status, and Redis holds exactly the sum of the increments answered 202 (so no field for a rejected request).
// An independent oracle (strict UTF-8, JSON.parse, the contract's rules for key and value) predicts the exact
// status of every authorised POST /increment, so the properties also catch a valid body that is refused.

const encoder = new TextEncoder();
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const NOW_S = () => Math.floor(Date.now() / 1000);

interface Increment {
  key: string;
  value: number;
}

/**
 * The contract's idea of a valid body, written without the service's code: UTF-8 (the service must not
 * guess at other bytes), JSON, an object with exactly `key` and `value`, the key a non-empty well-formed
 * string of at most `maxKeyLength` code points without NUL, the value a safe integer.
 */
function asIncrement(bytes: Uint8Array, maxKeyLength: number): Increment | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    return undefined;
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return undefined;
  const fields = Object.keys(parsed);
  if (fields.length !== 2 || !fields.includes("key") || !fields.includes("value")) return undefined;
  const { key, value } = parsed as Record<string, unknown>;
  if (typeof key !== "string" || key === "" || [...key].length > maxKeyLength) return undefined;
  if (!key.isWellFormed() || key.includes("\u0000")) return undefined;
  if (typeof value !== "number" || !Number.isSafeInteger(value)) return undefined;
  return { key, value };
}

/** What a lenient reader would make of `bytes`: where the service could have stored it, if it stored it. */
function looseIncrement(bytes: Uint8Array): { key: string; value: unknown } | undefined {
  try {
    const parsed: unknown = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof parsed !== "object" || parsed === null) return undefined;
    const { key, value } = parsed as Record<string, unknown>;
    return typeof key === "string" ? { key, value } : undefined;
  } catch {
    return undefined;
  }
}

/** What the dirty hash must hold: every accepted increment summed per key, as HINCRBY keeps it. */
class CounterModel {
  readonly totals = new Map<string, bigint>();

  constructor(readonly target: () => TestApi) {}

  /** The status an authorised, unthrottled POST /increment of `bytes` must get. */
  predict(bytes: Uint8Array): 202 | 400 | 413 | 422 {
    const { config } = this.target();
    if (bytes.byteLength > config.http.bodyLimitBytes) return 413;
    const increment = asIncrement(bytes, config.maxKeyLength);
    if (increment === undefined) return 400;
    const total = (this.totals.get(increment.key) ?? 0n) + BigInt(increment.value);
    return total < INT64_MIN || total > INT64_MAX ? 422 : 202;
  }

  /**
   * Records a 202 before anything is asserted about it, so that a failing run (and fast-check's shrinking
   * runs after it) leave the model matching Redis; when the oracle disagrees, what a lenient reader would
   * have stored is recorded, and the run fails on its own assertion.
   */
  record(bytes: Uint8Array): void {
    const increment = asIncrement(bytes, this.target().config.maxKeyLength) ?? looseIncrement(bytes);
    if (increment === undefined || typeof increment.value !== "number" || !Number.isInteger(increment.value))
      return;
    this.totals.set(increment.key, (this.totals.get(increment.key) ?? 0n) + BigInt(increment.value));
  }

  async expectStored(): Promise<void> {
    const target = this.target();
    const stored = await target.node.redis.hgetall(shardKeys(target.prefix, 0).dirty);
    // Maps, because a stored "__proto__" field must compare as data, not as a prototype.
    const expected = new Map([...this.totals].map(([key, total]) => [key, total.toString()]));
    expect(new Map(Object.entries(stored))).toEqual(expected);
  }
}

interface HostileRequest {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  body?: Uint8Array;
  /** Send the body as a stream of this many chunks, the way a chunked upload arrives. */
  chunks?: number;
}

/**
 * Sends one request and checks what it did to the store: exactly its own increment after a 202, nothing
 * otherwise. Checked per run (the field the body names and the field count), so a failure points at the
 * request that caused it; the whole hash is compared with the model at the end of each test.
 */
async function send(model: CounterModel, request: HostileRequest): Promise<Response> {
  const target = model.target();
  const { redis } = target.node;
  const dirty = shardKeys(target.prefix, 0).dirty;
  const probe = request.body === undefined ? undefined : looseIncrement(request.body)?.key;
  const snapshot = async () => {
    const [fields, field] = await Promise.all([
      redis.hlen(dirty),
      probe === undefined ? null : redis.hget(dirty, probe),
    ]);
    return { fields, field };
  };

  const method = request.method ?? "POST";
  const bytes = request.body;
  const chunks = request.chunks ?? 1;
  const chunkSize = Math.ceil((bytes?.byteLength ?? 0) / chunks);
  const before = await snapshot();
  const response = await target.node.app.request(request.path ?? "/increment", {
    method,
    headers: request.headers ?? {},
    ...(bytes === undefined
      ? {}
      : chunks === 1
        ? { body: bytes }
        : {
            body: new ReadableStream<Uint8Array>({
              start(controller) {
                for (let at = 0; at < bytes.byteLength; at += chunkSize)
                  controller.enqueue(bytes.slice(at, at + chunkSize));
                controller.close();
              },
            }),
            duplex: "half" as const,
          }),
  });
  const after = await snapshot();
  if (response.status === 202 && bytes !== undefined) model.record(bytes);

  await expectWellFormed(response, method);
  if (response.status === 202) {
    const increment = bytes === undefined ? undefined : asIncrement(bytes, target.config.maxKeyLength);
    expect(increment, "a 202 for a body that is not a valid increment").toBeDefined();
    expect(after.fields - before.fields).toBe(before.field === null ? 1 : 0);
    expect(BigInt(after.field ?? "0") - BigInt(before.field ?? "0")).toBe(BigInt(increment?.value ?? 0));
  } else {
    expect(after).toEqual(before);
  }
  return response;
}

/** Never a 5xx; a 202 has no body; every other non-2xx is a problem whose status is the HTTP status. */
async function expectWellFormed(response: Response, method: string): Promise<void> {
  expect(response.status).toBeGreaterThanOrEqual(200);
  expect(response.status).toBeLessThan(500);
  if (response.status === 202) expect(await response.text()).toBe("");
  if (response.ok) return;
  expect(response.headers.get("content-type")).toBe("application/problem+json");
  // A HEAD answer has the problem's headers but, as HTTP requires, no body.
  if (method.toUpperCase() === "HEAD") return;
  const problem = (await response.json()) as Problem;
  expect(problem.status).toBe(response.status);
  expect(problem.type).toBe(`urn:tally:problem:${problem.code}`);
  expect(problem.requestId).toBe(response.headers.get("x-request-id"));
}

// ---------------------------------------------------------------------------------------------------------
// Arbitraries

/** Code points that break naive handling of keys: NUL, lone surrogates, bidi and zero-width marks, etc. */
const oddPiece = fc.constantFrom(
  "\u0000",
  "\ud800",
  "\udbff",
  "\udc00",
  "\udfff",
  "\udfff\ud800",
  "\u200f",
  "\u202e",
  "\u200b",
  "\u0301",
  "e\u0301",
  "\ufeff",
  "\uffff",
  "\ufffd",
  "\u0085",
  "\u2028",
  "🦄",
  "👩‍👩‍👧",
  "\u{10ffff}",
  "\r\n",
  "\t",
  '"',
  "\\",
  "/",
  "%",
  "%00",
  ".",
  "..",
  "__proto__",
  "constructor",
  " ",
);

const oddKey: fc.Arbitrary<string> = fc.oneof(
  fc.string(),
  // unit "binary": any code point, lone surrogates included (fast-check 4's fullUnicodeString).
  fc.string({ unit: "binary" }),
  fc.string({ unit: "grapheme" }),
  fc
    .array(fc.oneof(oddPiece, fc.string({ unit: "binary", maxLength: 3 })), { maxLength: 12 })
    .map((parts) => parts.join("")),
  // Around the 256-character limit, counted in code points.
  fc.string({ unit: "binary", minLength: 250, maxLength: 262 }),
  fc.integer({ min: 254, max: 258 }).map((length) => "🦄".repeat(length)),
);

/** Number texts JSON.stringify cannot write: out-of-range, exponent forms, non-JSON spellings. */
const valueText: fc.Arbitrary<string> = fc.oneof(
  fc.integer().map(String),
  fc.maxSafeInteger().map(String),
  fc.bigInt({ min: -(2n ** 64n), max: 2n ** 64n }).map(String),
  fc.double().map((value) => JSON.stringify(value)),
  fc.constantFrom(
    "9007199254740991",
    "-9007199254740991",
    "9007199254740992",
    "-9007199254740993",
    "-0",
    "0",
    "1.0",
    "1e2",
    "1E+2",
    "1e400",
    "-1e400",
    "5e-324",
    "0.1",
    "01",
    "+1",
    ".5",
    "0x10",
    "Infinity",
    "NaN",
    "1_000",
    "true",
    "null",
    '"1"',
    "[1]",
    "{}",
  ),
  fc.jsonValue().map((value) => JSON.stringify(value)),
);

/** Bodies shaped like an increment, with every part of the shape open to mischief. */
const incrementish: fc.Arbitrary<string> = fc
  .record({
    key: fc.oneof(
      { arbitrary: oddKey.map((key) => JSON.stringify(key)), weight: 4 },
      { arbitrary: fc.jsonValue().map((value) => JSON.stringify(value)), weight: 1 },
    ),
    value: valueText,
    // Mostly absent: an unknown field makes any body a 400, which would hide what the other parts test.
    extra: fc.oneof(
      { arbitrary: fc.constant(null), weight: 4 },
      { arbitrary: fc.tuple(fc.string(), fc.jsonValue()), weight: 1 },
    ),
    omit: fc.constantFrom("none", "none", "none", "key", "value"),
    valueFirst: fc.boolean(),
  })
  .map(({ key, value, extra, omit, valueFirst }) => {
    const fields = [omit === "key" ? [] : [`"key":${key}`], omit === "value" ? [] : [`"value":${value}`]];
    if (valueFirst) fields.reverse();
    const all = fields.flat();
    if (extra !== null) all.push(`${JSON.stringify(extra[0])}:${JSON.stringify(extra[1])}`);
    return `{${all.join(",")}}`;
  });

/** A body that is valid, so the odd parts of a request around it decide the outcome. */
const validBody: fc.Arbitrary<string> = fc
  .record({ key: fc.string({ minLength: 1, maxLength: 40 }), value: fc.integer({ min: -1000, max: 1000 }) })
  .map((body) => JSON.stringify(body));

/** Header values the Fetch Headers class accepts (latin-1 without CR, LF, NUL), otherwise arbitrary. */
const headerValue: fc.Arbitrary<string> = fc.string({
  unit: fc.oneof(
    fc.integer({ min: 0x20, max: 0x7e }).map((code) => String.fromCharCode(code)),
    fc.integer({ min: 0x7f, max: 0xff }).map((code) => String.fromCharCode(code)),
    fc.constant("\t"),
  ),
  maxLength: 200,
});

const TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const httpToken = (maxLength: number) =>
  fc.string({ unit: fc.constantFrom(...TOKEN_CHARS), minLength: 1, maxLength });

const BASE64URL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const base64urlSegment = fc.string({ unit: fc.constantFrom(...BASE64URL_CHARS), maxLength: 60 });

const b64url = (text: string) => Buffer.from(text, "utf8").toString("base64url");

/** A JWT assembled by hand, so the header and payload can be anything jose would refuse to sign. */
function jwt(header: unknown, payload: unknown, sign: { alg: string; secret: string } | "unsigned"): string {
  const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  if (sign === "unsigned") return `${signingInput}.`;
  const hash = { HS256: "sha256", HS384: "sha384", HS512: "sha512" }[sign.alg] ?? "sha256";
  return `${signingInput}.${createHmac(hash, sign.secret).update(signingInput).digest("base64url")}`;
}

const claimFields = {
  // Mostly plausible, so that random claims reach the scope and body checks, not only jose's.
  sub: fc.oneof(
    { arbitrary: fc.string({ minLength: 1 }), weight: 4 },
    fc.string(),
    // Not strings: each would become a client id that String() merges with another client's.
    fc.constantFrom([], ["a"], ["a", "b"], 0, 5, true, {}, { sub: "a" }),
    fc.jsonValue(),
  ),
  scope: fc.oneof(
    {
      arbitrary: fc.constantFrom("counters:write", "counters:read counters:write", "counters:read", ""),
      weight: 4,
    },
    fc.constantFrom("COUNTERS:WRITE", " counters:write ", "counters:write\tcounters:read", "counters:*"),
    fc.string(),
    fc.jsonValue(),
  ),
  exp: fc.oneof(
    { arbitrary: fc.integer({ min: 60, max: 3600 }).map((offset) => NOW_S() + offset), weight: 4 },
    fc.integer({ min: -3600, max: 3600 }).map((offset) => NOW_S() + offset),
    fc.jsonValue(),
  ),
  nbf: fc.oneof(
    fc.integer({ min: -3600, max: 3600 }).map((offset) => NOW_S() + offset),
    fc.jsonValue(),
  ),
  iat: fc.oneof(
    fc.integer({ min: -3600, max: 60 }).map((offset) => NOW_S() + offset),
    fc.jsonValue(),
  ),
  extra: fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 3 }),
};
const claims: fc.Arbitrary<Record<string, unknown>> = fc
  .oneof(
    { arbitrary: fc.record(claimFields, { requiredKeys: ["sub", "scope", "exp", "extra"] }), weight: 3 },
    fc.record(claimFields, { requiredKeys: [] }),
  )
  // The random extra claims sit beside the registered ones; the registered ones win a name clash.
  .map(({ extra, ...registered }) => ({ ...extra, ...registered }));

const jwtHeaderExtras = fc.dictionary(
  fc.oneof(fc.constantFrom("typ", "kid", "crit", "b64", "jku", "x5u", "jwk", "cty", "zip"), fc.string()),
  fc.jsonValue(),
  { maxKeys: 3 },
);

type AuthCase =
  | { kind: "valid" }
  | { kind: "missing" }
  | { kind: "invalid"; header: string }
  | { kind: "signed"; header: string; claims: Record<string, unknown> };

/** Authorization headers that must all be refused with 401, and correctly signed tokens with random claims. */
const authCase: fc.Arbitrary<AuthCase> = fc.oneof(
  // The service's own token: the other headers, not the credential, decide these.
  { arbitrary: fc.constant<AuthCase>({ kind: "valid" }), weight: 4 },
  fc.constant<AuthCase>({ kind: "missing" }),
  headerValue.map((header): AuthCase => ({ kind: "invalid", header })),
  fc
    .constantFrom(
      "Bearer",
      "Bearer ",
      "bearer\ta.b.c",
      "Basic dXNlcjpwYXNz",
      "Bearer a.b.c",
      "Bearer ..",
      "Bearer =",
      "Bearer a.b.c d.e.f",
      "Bearer a.b.c,Bearer d.e.f",
      "Token a.b.c",
      "Bearer a+b/c.d+e.f/g==",
    )
    .map((header): AuthCase => ({ kind: "invalid", header })),
  fc
    .array(base64urlSegment, { minLength: 1, maxLength: 5 })
    .map((segments): AuthCase => ({ kind: "invalid", header: `Bearer ${segments.join(".")}` })),
  // Forged: plausible claims, any header, signed with a key that is not the service's.
  fc
    .record({
      alg: fc.constantFrom("HS256", "HS384", "HS512"),
      extras: jwtHeaderExtras,
      claims,
      secret: fc.string({ minLength: 1, maxLength: 64 }).filter((secret) => secret !== TEST_SECRET),
    })
    .map(
      ({ alg, extras, claims, secret }): AuthCase => ({
        kind: "invalid",
        header: `Bearer ${jwt({ ...extras, alg }, claims, { alg, secret })}`,
      }),
    ),
  // The right key and claims under another HMAC algorithm: the algorithm is pinned to HS256.
  fc.constantFrom("HS384", "HS512").map(
    (alg): AuthCase => ({
      kind: "invalid",
      header: `Bearer ${jwt({ alg }, { sub: "a", scope: "counters:write", exp: NOW_S() + 600 }, { alg, secret: TEST_SECRET })}`,
    }),
  ),
  // alg: none (and its spellings), with the right claims: an unsigned token is never a credential.
  fc
    .record({ alg: fc.constantFrom("none", "None", "NONE", "nOnE", ""), sub: fc.string({ minLength: 1 }) })
    .map(
      ({ alg, sub }): AuthCase => ({
        kind: "invalid",
        header: `Bearer ${jwt({ alg, typ: "JWT" }, { sub, scope: "counters:write", exp: NOW_S() + 600 }, "unsigned")}`,
      }),
    ),
  // A huge payload signed with a wrong key: verified (or not) without falling over.
  fc.integer({ min: 10_000, max: 200_000 }).map(
    (size): AuthCase => ({
      kind: "invalid",
      header: `Bearer ${jwt({ alg: "HS256" }, { sub: "big", scope: "counters:write", exp: NOW_S() + 600, pad: "p".repeat(size) }, { alg: "HS256", secret: "not-the-secret" })}`,
    }),
  ),
  // The right key with random claims and header fields: what a buggy (not hostile) issuer could mint.
  {
    arbitrary: fc.record({ extras: jwtHeaderExtras, claims }).map(
      ({ extras, claims }): AuthCase => ({
        kind: "signed",
        header: `Bearer ${jwt({ ...extras, alg: "HS256" }, claims, { alg: "HS256", secret: TEST_SECRET })}`,
        claims,
      }),
    ),
    weight: 4,
  },
);

/** Whether a correctly signed token with these claims may be let through to write, per the contract. */
function grantsWrite(tokenClaims: Record<string, unknown>): boolean {
  const { sub, scope, exp } = tokenClaims;
  return (
    typeof sub === "string" &&
    /^[\x21-\x7E]{1,255}$/.test(sub) &&
    typeof scope === "string" &&
    scope.split(" ").includes("counters:write") &&
    typeof exp === "number" &&
    exp > NOW_S() - 10
  );
}

const CONTENT_TYPES = [
  "application/json",
  "application/json; charset=utf-16",
  "application/json; charset=latin1",
  "text/plain",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=x",
  "application/problem+json",
  "*/*",
  "",
];

// Left out of the random extras: the framing headers, which Node's HTTP parser derives from the wire (see
// test/faults/hostile-network.test.ts) and app.request() would let a test falsify as no connection can, and
// the two headers the property sets itself.
const NOT_RANDOM = new Set(["content-length", "transfer-encoding", "authorization", "content-type"]);

const extraHeaders = fc.dictionary(
  fc.oneof(
    fc.constantFrom(
      "x-request-id",
      "x-forwarded-for",
      "host",
      "accept",
      "accept-encoding",
      "expect",
      "cookie",
    ),
    httpToken(20),
  ),
  headerValue,
  { maxKeys: 4 },
);

// ---------------------------------------------------------------------------------------------------------

let api: TestApi;
let token: string;
const model = new CounterModel(() => api);

beforeAll(async () => {
  // A limit no property reaches, so a 429 never hides the answer under test.
  api = await createTestApi({ RATE_LIMIT_POINTS: "1000000" });
  token = await api.token();
});
afterAll(() => api.close());

/** POSTs `bytes` with a valid token: the status must be exactly the oracle's, the store changed accordingly. */
async function postAndCheck(bytes: Uint8Array, request: HostileRequest = {}): Promise<Response> {
  const expected = model.predict(bytes);
  const response = await send(model, {
    ...request,
    headers: { authorization: `Bearer ${token}`, ...request.headers },
    body: bytes,
  });
  expect(response.status).toBe(expected);
  return response;
}

const percentEncode = (text: string) =>
  [...encoder.encode(text)].map((byte) => `%${byte.toString(16).padStart(2, "0")}`).join("");

describe("POST /increment with hostile bodies", () => {
  it("any JSON value as the body", async () => {
    const anyJson = fc.oneof(
      fc.json(),
      fc.jsonValue().map((value) => JSON.stringify(value)),
      fc.dictionary(fc.string({ unit: "binary" }), fc.jsonValue()).map((value) => JSON.stringify(value)),
      fc
        .dictionary(
          fc.constantFrom("key", "value", "Key", "value ", "__proto__", "constructor"),
          fc.jsonValue(),
        )
        .map((value) => JSON.stringify(value)),
    );
    await fc.assert(
      fc.asyncProperty(anyJson, async (body) => {
        await postAndCheck(encoder.encode(body));
      }),
      { numRuns: 400 },
    );
    await model.expectStored();
  });

  it("{key, value} with keys and values of any type and spelling", async () => {
    await fc.assert(
      fc.asyncProperty(incrementish, async (body) => {
        await postAndCheck(encoder.encode(body));
      }),
      { numRuns: 500 },
    );
    await model.expectStored();
  });

  it("random bytes, alone or spliced into a valid body", async () => {
    const spliced = fc
      .tuple(validBody, fc.uint8Array({ minLength: 1, maxLength: 4 }), fc.nat())
      .map(([body, junk, at]) => {
        const bytes = encoder.encode(body);
        const cut = at % (bytes.byteLength + 1);
        return new Uint8Array([...bytes.subarray(0, cut), ...junk, ...bytes.subarray(cut)]);
      });
    // A key whose bytes are not UTF-8 must be refused, not stored as U+FFFD under another key's name.
    const badUtf8InKey = fc
      .uint8Array({ minLength: 1, maxLength: 4 })
      .map(
        (junk) =>
          new Uint8Array([...encoder.encode('{"key":"k'), ...junk, ...encoder.encode('","value":1}')]),
      );
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 512 }), spliced, badUtf8InKey), async (bytes) => {
        await postAndCheck(bytes);
      }),
      { numRuns: 400 },
    );
    await model.expectStored();
  });

  it("odd Unicode keys are stored byte-exact or refused, and read back as sent", async () => {
    await fc.assert(
      fc.asyncProperty(oddKey, fc.integer({ min: -1000, max: 1000 }), async (key, value) => {
        const response = await postAndCheck(encoder.encode(JSON.stringify({ key, value })));
        // "." and ".." cannot be a URL path segment (they are resolved away, even as %2E), so they are
        // written but cannot be read through GET /counters/{key}.
        if (response.status !== 202 || key === "." || key === "..") return;
        const reading = await send(model, {
          method: "GET",
          path: `/counters/${percentEncode(key)}`,
          headers: { authorization: `Bearer ${token}` },
        });
        expect(reading.status).toBe(200);
        const text = await reading.text();
        expect((JSON.parse(text) as { key: unknown }).key).toBe(key);
        // Raw text, because totals are 64-bit and JSON.parse would round them.
        expect(text).toContain(`"pending":${model.totals.get(key)},`);
      }),
      { numRuns: 400 },
    );
    await model.expectStored();
  });

  it("bodies around and far over BODY_LIMIT_BYTES, with or without Content-Length, whole or in chunks", async () => {
    const limit = api.config.http.bodyLimitBytes;
    const bodies = fc.record({
      size: fc.oneof(
        fc.integer({ min: limit - 32, max: limit + 32 }),
        fc.integer({ min: limit, max: 4 * limit }),
      ),
      // Whitespace keeps a valid increment valid at any size, so the limit alone decides.
      padding: fc.constantFrom(" ", "\n", "x", "[", "é", "🦄"),
      withLength: fc.boolean(),
      chunks: fc.integer({ min: 1, max: 8 }),
    });
    await fc.assert(
      fc.asyncProperty(bodies, async ({ size, padding, withLength, chunks }) => {
        const head = encoder.encode('{"key":"big","value":1}');
        // Cut to the byte: a multi-byte padding may end mid-character, which the oracle then calls a 400.
        const pad = encoder.encode(padding.repeat(Math.max(0, size - head.byteLength)));
        const bytes = new Uint8Array([...head, ...pad]).subarray(0, Math.max(size, head.byteLength));
        // A truthful Content-Length, as Node's HTTP parser guarantees; without one, the body is measured.
        const headers: Record<string, string> = withLength
          ? { "content-length": String(bytes.byteLength) }
          : {};
        await postAndCheck(bytes, { headers, chunks });
      }),
      { numRuns: 60 },
    );
    await model.expectStored();
  });

  it("deeply nested JSON is a 400 (or 413 past the limit), never a stack overflow", async () => {
    const nested = fc.record({
      depth: fc.oneof(fc.integer({ min: 1, max: 100 }), fc.integer({ min: 1_000, max: 12_000 })),
      shape: fc.constantFrom("open", "balanced", "objects", "as-key", "as-value", "extra-field"),
    });
    await fc.assert(
      fc.asyncProperty(nested, async ({ depth, shape }) => {
        const arrays = `${"[".repeat(depth)}${"]".repeat(depth)}`;
        const body = {
          open: "[".repeat(depth),
          balanced: arrays,
          objects: `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`,
          "as-key": `{"key":${arrays},"value":1}`,
          "as-value": `{"key":"deep","value":${arrays}}`,
          "extra-field": `{"key":"deep","value":1,"x":${arrays}}`,
        }[shape];
        const response = await postAndCheck(encoder.encode(body));
        expect([400, 413]).toContain(response.status);
      }),
      { numRuns: 100 },
    );
    // The case named in the brief, explicitly: 10,000 levels fit under the default 16 KiB limit.
    expect((await postAndCheck(encoder.encode("[".repeat(10_000)))).status).toBe(400);
    await model.expectStored();
  });

  it("1 MiB of nesting under the largest body limit the configuration allows", async () => {
    const roomy = await createTestApi({ RATE_LIMIT_POINTS: "1000000", BODY_LIMIT_BYTES: "1048576" });
    const roomyModel = new CounterModel(() => roomy);
    try {
      const roomyToken = await roomy.token();
      const depth = 1_048_576 / 2;
      for (const body of ["[".repeat(depth * 2), `${"[".repeat(depth)}${"]".repeat(depth)}`]) {
        const response = await send(roomyModel, {
          headers: { authorization: `Bearer ${roomyToken}` },
          body: encoder.encode(body),
        });
        expect(response.status).toBe(400);
      }
      await roomyModel.expectStored();
    } finally {
      await roomy.close();
    }
  });

  it("concurrent requests: writes batched per event-loop turn still add up to exactly the 202s", async () => {
    // Keys of their own ("c/…"), so small values can never reach the 64-bit edge, where a 422 would
    // depend on the order Redis happened to apply them in.
    const batch = fc.array(
      fc.oneof(
        incrementish,
        fc
          .record({ key: oddKey, value: fc.integer({ min: -1_000_000, max: 1_000_000 }) })
          .map(({ key, value }) => JSON.stringify({ key: `c/${key}`, value })),
      ),
      { minLength: 1, maxLength: 30 },
    );
    await fc.assert(
      fc.asyncProperty(batch, async (bodies) => {
        const sent = bodies.map((body) => encoder.encode(body));
        const responses = await Promise.all(
          sent.map((bytes) =>
            api.node.app.request("/increment", {
              method: "POST",
              headers: { authorization: `Bearer ${token}` },
              body: bytes,
            }),
          ),
        );
        for (const [index, response] of responses.entries()) {
          if (response.status === 202) model.record(sent[index] ?? new Uint8Array());
        }
        for (const [index, response] of responses.entries()) {
          const bytes = sent[index] ?? new Uint8Array();
          await expectWellFormed(response, "POST");
          const key = asIncrement(bytes, api.config.maxKeyLength)?.key;
          if (key?.startsWith("c/")) expect(response.status).toBe(202);
          else expect([202, 400, 422]).toContain(response.status);
          if (response.status === 202) expect(key).toBeDefined();
        }
        // Concurrent requests cannot be told apart in the store one by one: compare all of it.
        await model.expectStored();
      }),
      { numRuns: 60 },
    );
  });
});

describe("hostile headers", () => {
  it("garbage Content-Type, Authorization and extra headers", async () => {
    const requests = fc.record({
      auth: authCase,
      contentType: fc.option(fc.oneof(fc.constantFrom(...CONTENT_TYPES), headerValue)),
      extra: extraHeaders,
      body: fc.oneof(validBody, incrementish),
    });
    await fc.assert(
      fc.asyncProperty(requests, async ({ auth, contentType, extra, body }) => {
        const headers = Object.fromEntries(
          Object.entries(extra).filter(([name]) => !NOT_RANDOM.has(name.toLowerCase())),
        );
        if (contentType !== null) headers["content-type"] = contentType;
        if (auth.kind === "valid") headers.authorization = `Bearer ${token}`;
        else if (auth.kind !== "missing") headers.authorization = auth.header;
        const bytes = encoder.encode(body);
        // The Content-Type never matters: the service reads every body as JSON.
        const forBody = model.predict(bytes);
        const response = await send(model, { headers, body: bytes });

        if (auth.kind === "valid") {
          expect(response.status).toBe(forBody);
        } else if (auth.kind === "signed") {
          expect([202, 400, 401, 403, 422]).toContain(response.status);
          if (response.status === 202) expect(grantsWrite(auth.claims)).toBe(true);
        } else {
          expect(response.status).toBe(401);
          const challenge = response.headers.get("www-authenticate") ?? "";
          expect(challenge).toMatch(/^Bearer realm="tally"/);
          if (auth.kind === "invalid") expect(challenge).toContain('error="invalid_token"');
        }
        if (response.status !== 401 && response.status !== 403) expect(response.status).toBe(forBody);
      }),
      { numRuns: 400 },
    );
    await model.expectStored();
  });
});

describe("random methods and paths", () => {
  // Methods the Fetch Request class itself refuses to build, so they can only arrive over a socket.
  const FORBIDDEN_METHODS = new Set(["CONNECT", "TRACE", "TRACK"]);
  const method = fc
    .oneof(
      fc.constantFrom(
        "GET",
        "HEAD",
        "POST",
        "PUT",
        "DELETE",
        "OPTIONS",
        "PATCH",
        "post",
        "get",
        "hEaD",
        "PROPFIND",
      ),
      httpToken(12),
    )
    .filter((name) => !FORBIDDEN_METHODS.has(name.toUpperCase()))
    // undici warns (once, noisily) about a lower-case "patch"; PATCH itself is covered.
    .filter((name) => name === "PATCH" || name.toUpperCase() !== "PATCH");
  const path = fc.oneof(fc.webPath(), {
    arbitrary: fc
      .tuple(
        fc.constantFrom(
          "/increment",
          "/increment/",
          "/INCREMENT",
          "/counters/",
          "/counters",
          "/healthz",
          "/readyz",
          "/metrics",
          "/",
          "//",
        ),
        fc.oneof(
          fc.constant(""),
          fc.webPath(),
          fc.webQueryParameters().map((query) => `?${query}`),
          oddKey.map(percentEncode),
          fc.constantFrom("%", "%zz", "%00", "%ff", "%2e%2e", "/..", "/%2F", "%ED%A0%80", "%C0%AF"),
        ),
      )
      .map(([base, rest]) => `${base}${rest}`),
    // Mostly near the real routes: a random path is nearly always just a 404.
    weight: 4,
  });
  const requests = fc.record({
    method,
    path,
    withToken: fc.boolean(),
    body: fc.option(fc.oneof(validBody, incrementish, fc.string())),
  });

  it("never a 5xx, always a problem for an error, and only POST /increment ever stores", async () => {
    await fc.assert(
      fc.asyncProperty(requests, async ({ method, path, withToken, body }) => {
        // The Fetch Request class refuses a body on GET and HEAD.
        const bodyless = ["GET", "HEAD"].includes(method.toUpperCase());
        const response = await send(model, {
          method,
          path,
          headers: withToken ? { authorization: `Bearer ${token}` } : {},
          ...(body === null || bodyless ? {} : { body: encoder.encode(body) }),
        });
        if (response.status === 405)
          expect(response.headers.get("allow")).toMatch(/^(GET|POST|GET, DELETE)$/);
      }),
      { numRuns: 500 },
    );
    await model.expectStored();
  });
});

describe("with a low rate limit", () => {
  const POINTS = 5;
  let limited: TestApi;
  const limitedModel = new CounterModel(() => limited);
  beforeAll(async () => {
    limited = await createTestApi({ RATE_LIMIT_POINTS: String(POINTS), RATE_LIMIT_DURATION_S: "60" });
  });
  afterAll(() => limited.close());

  it("429s are problems with Retry-After and RateLimit fields, exactly once a client's quota is spent", async () => {
    const clients = new Map<string, string>();
    for (const name of ["a", "b", "c"]) clients.set(name, await limited.token({ subject: `rl-${name}` }));
    clients.set("reader", await limited.token({ subject: "rl-reader", scopes: ["counters:read"] }));
    const spent = new Map<string, number>();
    const requests = fc.record({
      who: fc.constantFrom("a", "b", "c", "reader", "garbage", "none"),
      body: fc.oneof(validBody, incrementish, fc.constant("x".repeat(20_000))),
    });
    await fc.assert(
      fc.asyncProperty(requests, async ({ who, body }) => {
        const clientToken = clients.get(who);
        const authorization =
          clientToken !== undefined
            ? `Bearer ${clientToken}`
            : who === "garbage"
              ? "Bearer a.b.c"
              : undefined;
        const bytes = encoder.encode(body);
        const forBody = limitedModel.predict(bytes);
        // Sent with its Content-Length, as an HTTP client sends a body it has whole.
        const headers: Record<string, string> = { "content-length": String(bytes.byteLength) };
        if (authorization !== undefined) headers.authorization = authorization;
        const response = await send(limitedModel, { headers, body: bytes });

        // The order of the checks: the declared body size, then the token, then the quota (spent even by a
        // request that is refused later for its scope or body), then the scope and the body. (A chunked body
        // declares no size: it is measured as the route reads it, after the token.)
        if (forBody === 413) expect(response.status).toBe(413);
        else if (clientToken === undefined) expect(response.status).toBe(401);
        else {
          const used = (spent.get(who) ?? 0) + 1;
          spent.set(who, used);
          if (used > POINTS) {
            expect(response.status).toBe(429);
            const retryAfter = Number(response.headers.get("retry-after"));
            expect(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60).toBe(true);
            expect(response.headers.get("ratelimit-policy")).toBe(`"default";q=${POINTS};w=60`);
            expect(response.headers.get("ratelimit")).toMatch(/^"default";r=0;t=\d+$/);
          } else if (who === "reader") expect(response.status).toBe(403);
          else expect(response.status).toBe(forBody);
        }
      }),
      { numRuns: 300 },
    );
    await limitedModel.expectStored();
  });
});
