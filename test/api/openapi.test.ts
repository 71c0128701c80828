import { readFileSync } from "node:fs";
import { Validator } from "@seriousme/openapi-schema-validator";
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { OpenApiDocument } from "../../api/openapi/document.ts";
import { shardKeys } from "../../lib/redis/keyspace.ts";
import { createTestApi, type TestApi } from "../support/api.ts";

// The OpenAPI document: served without a token, valid OpenAPI 3.1, and true to the API. Its request schemas
// are generated from the routes' valibot schemas; here an independent JSON Schema validator (Ajv) must
// accept exactly the bodies the API accepts, and every real answer must be one the document describes.

let api: TestApi;
let document: OpenApiDocument;
beforeAll(async () => {
  // A key limit other than the default, to see the document follow the configuration; a small quota, to get
  // a 429 (every other request uses a client of its own).
  api = await createTestApi({
    MAX_KEY_LENGTH: "64",
    RATE_LIMIT_POINTS: "4",
    RATE_LIMIT_DURATION_S: "60",
    BODY_LIMIT_BYTES: "2048",
  });
  const response = await api.node.app.request("/openapi.json");
  expect(response.status).toBe(200);
  document = (await response.json()) as OpenApiDocument;
});
afterAll(() => api.close());

type JsonObject = { [key: string]: unknown };
const isObject = (value: unknown): value is JsonObject =>
  typeof value === "object" && value !== null && !Array.isArray(value);

/** A copy of `schema` with every #/components/schemas/… reference replaced by the schema (none recurse). */
function resolveRefs(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(resolveRefs);
  if (!isObject(schema)) return schema;
  const ref = schema.$ref;
  if (typeof ref === "string") {
    const name = ref.replace(/^#\/components\/schemas\//, "");
    const target = document.components.schemas[name];
    if (target === undefined) throw new Error(`unresolvable $ref ${ref}`);
    return resolveRefs(target);
  }
  return Object.fromEntries(Object.entries(schema).map(([key, value]) => [key, resolveRefs(value)]));
}

/** Ajv in strict mode: a schema with an unknown keyword or format does not compile. */
function newAjv(): Ajv2020 {
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  // RFC 3339 date-time; Ajv ships no formats itself.
  ajv.addFormat("date-time", {
    type: "string",
    validate: (text: string) =>
      /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)$/i.test(text) &&
      !Number.isNaN(Date.parse(text)),
  });
  return ajv;
}

const compiled = new Map<unknown, ValidateFunction>();
function validatorFor(schema: unknown): ValidateFunction {
  let validate = compiled.get(schema);
  if (validate === undefined) {
    const resolved = resolveRefs(schema);
    if (!isObject(resolved)) throw new Error("not a schema object");
    validate = newAjv().compile(resolved);
    compiled.set(schema, validate);
  }
  return validate;
}

function operation(path: string, method: "get" | "post") {
  const found = document.paths[path]?.[method];
  if (found === undefined) throw new Error(`${method.toUpperCase()} ${path} is not documented`);
  return found;
}

/** Checks one real answer against the document: status, required headers, header values and body. */
async function expectDocumented(path: string, method: "get" | "post", response: Response) {
  const documented = operation(path, method).responses[String(response.status)];
  expect(documented, `${method.toUpperCase()} ${path} ${response.status} is documented`).toBeDefined();
  if (documented === undefined) return;
  for (const [name, header] of Object.entries(documented.headers)) {
    const raw = response.headers.get(name);
    if (header.required) expect(raw, `${response.status} carries ${name}`).not.toBeNull();
    if (raw === null) continue;
    const value = header.schema.type === "integer" ? Number(raw) : raw;
    expect(validatorFor(header.schema)(value), `${name}: ${raw}`).toBe(true);
  }
  const text = await response.text();
  const mediaTypes = Object.entries(documented.content ?? {});
  if (mediaTypes.length === 0) {
    expect(text).toBe("");
    return;
  }
  const contentType = response.headers.get("content-type") ?? "";
  const media = mediaTypes.find(([type]) => contentType.startsWith(type));
  expect(media, `content-type ${contentType} is documented`).toBeDefined();
  if (media === undefined) return;
  const validate = validatorFor(media[1].schema);
  const valid = validate(JSON.parse(text));
  expect(validate.errors ?? [], text).toEqual([]);
  expect(valid).toBe(true);
}

describe("GET /openapi.json", () => {
  it("is served without a token, cacheable, as OpenAPI 3.1 of this version", async () => {
    const response = await api.node.app.request("/openapi.json");
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("application/json");
    expect(response.headers.get("cache-control")).toBe("public, max-age=300");
    expect(document.openapi).toMatch(/^3\.1\.\d+$/);
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
      version: string;
    };
    expect(document.info.version).toBe(pkg.version);
  });

  it("is a valid OpenAPI 3.1 document whose every schema compiles under strict JSON Schema 2020-12", async () => {
    const result = await new Validator().validate(
      JSON.parse(JSON.stringify(document)) as Record<string, unknown>,
    );
    expect(result.errors).toBeUndefined();
    expect(result.valid).toBe(true);

    const schemas: unknown[] = Object.values(document.components.schemas);
    const collect = (node: unknown) => {
      if (Array.isArray(node)) node.forEach(collect);
      else if (isObject(node))
        for (const [key, value] of Object.entries(node)) {
          if (key === "schema") schemas.push(value);
          else collect(value);
        }
    };
    collect(document.paths);
    collect(document.components.parameters);
    expect(schemas.length).toBeGreaterThan(20);
    for (const schema of schemas) expect(() => validatorFor(schema)).not.toThrow();
  });

  it("documents exactly the paths and methods the app routes", () => {
    const routed = new Set(
      api.node.app.routes
        // Middleware (ALL) and the catch-alls that only authenticate or answer 405 are not operations.
        .filter((route) => route.method !== "ALL" && !route.path.includes("*"))
        .map((route) => `${route.method} ${route.path.replace(/:(\w+)(?:\{[^}]*\})?/g, "{$1}")}`),
    );
    const documented = new Set(
      Object.entries(document.paths).flatMap(([path, methods]) =>
        Object.keys(methods).map((method) => `${method.toUpperCase()} ${path}`),
      ),
    );
    expect([...documented].sort()).toEqual([...routed].sort());
    expect([...documented].sort()).toEqual([
      "DELETE /counters/{key}",
      "GET /counters",
      "GET /counters/{key}",
      "GET /healthz",
      "GET /openapi.json",
      "GET /readyz",
      "POST /increment",
      "POST /increments",
      "POST /read",
    ]);
  });

  it("derives the increment body and the key from the valibot schemas, under this node's configuration", async () => {
    const body = document.components.schemas.IncrementBody;
    expect(body).toMatchObject({
      type: "object",
      required: ["key", "value"],
      additionalProperties: false,
      properties: {
        key: { type: "string", minLength: 1, maxLength: 64 },
        value: { type: "integer", minimum: -(2 ** 53 - 1), maximum: 2 ** 53 - 1 },
      },
    });
    expect(api.config.maxKeyLength).toBe(64);
    const keyParameter = operation("/counters/{key}", "get").parameters.find(
      (parameter) => "name" in parameter && parameter.name === "key",
    );
    expect(keyParameter).toMatchObject({ in: "path", required: true, schema: { maxLength: 64 } });
    expect(document.components.schemas.CounterReading).toMatchObject({
      properties: { key: { maxLength: 64 } },
    });
    // The limit is the configuration's, not a constant.
    const defaults = await createTestApi();
    try {
      const defaultDocument = (await (
        await defaults.node.app.request("/openapi.json")
      ).json()) as OpenApiDocument;
      expect(defaultDocument.components.schemas.IncrementBody).toMatchObject({
        properties: { key: { maxLength: 256 } },
      });
    } finally {
      await defaults.close();
    }
    const idempotencyKey = document.components.parameters.IdempotencyKey;
    expect(idempotencyKey).toMatchObject({ name: "Idempotency-Key", in: "header", required: false });
    expect(idempotencyKey?.schema.pattern).toBe("^[\\x20-\\x7E]{1,255}$");
  });
});

describe("the documented body schema and the API agree", () => {
  const MAX = Number.MAX_SAFE_INTEGER;
  const accepts = () => validatorFor(document.components.schemas.IncrementBody);

  /** Sends `text` as a client of its own (no quota in the way) and expects what the JSON Schema says. */
  async function expectAgreement(text: string): Promise<number> {
    const expected = accepts()(JSON.parse(text)) ? 202 : 400;
    const response = await api.increment(text, await api.token());
    expect(response.status, text).toBe(expected);
    return expected;
  }

  it.each([
    '{"key":"a","value":1}',
    '{"key":"a","value":2.0}',
    '{"key":"a","value":1e3}',
    '{"key":"a","value":-0}',
    '{"key":"a","value":1e400}',
    `{"key":"a","value":${MAX}}`,
    `{"key":"a","value":${-MAX}}`,
    '{"key":"a","value":9007199254740992}',
    '{"key":"a","value":9007199254740993}',
    '{"key":"a","value":1.5}',
    '{"key":"a","value":"1"}',
    '{"key":"","value":1}',
    '{"key":"a\\u0000b","value":1}',
    '{"key":"a\\ud800b","value":1}',
    '{"key":"a\\udc00\\ud800b","value":1}',
    '{"key":"a\\ud83e\\udd84b","value":1}',
    JSON.stringify({ key: "🦄".repeat(64), value: 1 }),
    JSON.stringify({ key: "🦄".repeat(65), value: 1 }),
    JSON.stringify({ key: "k".repeat(64), value: 1 }),
    JSON.stringify({ key: "k".repeat(65), value: 1 }),
    '{"key":"a","key":"b","value":1}',
    '{"key":"a","value":1,"vaule":1}',
    '{"value":1}',
    '{"key":"a"}',
    "[]",
    "null",
    '"a"',
  ])("%s", async (text) => {
    await expectAgreement(text);
  });

  it("for generated bodies: 202 exactly when the JSON Schema accepts, else 400", async () => {
    // Characters a key may hold, and (in short keys) now and then one it may not: long keys of random
    // characters would almost never be valid, and the limit is worth probing with valid characters.
    const allowed = fc.oneof(
      fc.constantFrom("a", "/", "~", "é", "🦄", "\u2028"),
      fc.string({ unit: "binary", minLength: 1, maxLength: 1 }),
    );
    const anyUnit = fc.oneof(
      { weight: 8, arbitrary: allowed },
      { weight: 1, arbitrary: fc.constantFrom("\u0000", "\ud800", "\udbff", "\udc00", "\udfff") },
    );
    const key = fc.oneof(
      { weight: 4, arbitrary: fc.string({ unit: anyUnit, maxLength: 8 }) },
      {
        weight: 2,
        arbitrary: fc
          .integer({ min: 62, max: 66 })
          .chain((length) => fc.string({ unit: allowed, minLength: length, maxLength: length })),
      },
      { weight: 1, arbitrary: fc.constantFrom<unknown>(5, null, true, [], {}) },
    );
    const value = fc.oneof(
      { weight: 4, arbitrary: fc.integer() },
      { weight: 4, arbitrary: fc.maxSafeInteger() },
      { weight: 1, arbitrary: fc.double() },
      {
        weight: 2,
        arbitrary: fc.constantFrom<unknown>(
          0,
          -0,
          MAX,
          -MAX,
          MAX + 1,
          -MAX - 1,
          2 ** 63,
          0.5,
          "1",
          true,
          null,
          [1],
        ),
      },
    );
    const body = fc.oneof(
      { weight: 8, arbitrary: fc.record({ key, value }) },
      { weight: 2, arbitrary: fc.record({ key, value, vaule: fc.integer() }, { requiredKeys: [] }) },
      { weight: 1, arbitrary: fc.constantFrom<unknown>([], [{ key: "a", value: 1 }], "a", null, 7) },
    );
    const seen = { 202: 0, 400: 0 };
    await fc.assert(
      fc.asyncProperty(body, async (generated) => {
        seen[(await expectAgreement(JSON.stringify(generated))) === 202 ? 202 : 400]++;
      }),
      { numRuns: 200 },
    );
    // Not vacuous: both answers came up often.
    expect(seen[202]).toBeGreaterThan(30);
    expect(seen[400]).toBeGreaterThan(30);
  });
});

describe("real answers are the ones the document describes", () => {
  const post = (body: unknown, token: string | null, headers: Record<string, string> = {}) =>
    api.node.app.request("/increment", {
      method: "POST",
      headers: { ...(token === null ? {} : { authorization: `Bearer ${token}` }), ...headers },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
  const read = (key: string, token: string | null) =>
    api.node.app.request(`/counters/${encodeURIComponent(key)}`, {
      headers: token === null ? {} : { authorization: `Bearer ${token}` },
    });

  it("POST /increment", async () => {
    const check = (response: Response) => expectDocumented("/increment", "post", response);
    await check(await post({ key: "doc", value: 1 }, await api.token()));

    const retried = await api.token();
    const once = { "idempotency-key": "doc-1" };
    await check(await post({ key: "doc", value: 1 }, retried, once));
    const replay = await post({ key: "doc", value: 1 }, retried, once);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    await check(replay);
    const reused = await post({ key: "doc", value: 2 }, retried, once);
    expect(reused.status).toBe(422);
    await check(reused);

    await check(await post({ key: "", value: 1.5 }, await api.token()));
    await check(await post({ key: "doc", value: 1 }, await api.token(), { "idempotency-key": "a\tb" }));
    await check(await post({ key: "doc", value: 1 }, null));
    await check(await post({ key: "doc", value: 1 }, "not-a-jwt"));
    await check(await post({ key: "doc", value: 1 }, await api.token({ scopes: ["counters:read"] })));
    await check(await post({ key: "doc", pad: "x".repeat(3_000) }, await api.token()));

    const nearMax = (2n ** 63n - 10n).toString();
    await api.node.redis.hset(shardKeys(api.prefix, 0).dirty, "edge", nearMax);
    const outOfRange = await post({ key: "edge", value: 11 }, await api.token());
    expect(outOfRange.status).toBe(422);
    await check(outOfRange);

    const limited = await api.token();
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      const response = await post({ key: "doc", value: 1 }, limited);
      statuses.push(response.status);
      await check(response);
    }
    expect(statuses).toEqual([202, 202, 202, 202, 429]);
  });

  it("GET /counters/{key}", async () => {
    const check = (response: Response) => expectDocumented("/counters/{key}", "get", response);
    await api.increment({ key: "doc/read", value: 3 }, await api.token());
    const reading = await read("doc/read", await api.token());
    expect(reading.status).toBe(200);
    await check(reading);
    await api.node.pool.query(
      "INSERT INTO counters (key, value, updated_at) VALUES ('doc-huge', 9223372036854775000, now())",
    );
    await check(await read("doc-huge", await api.token()));
    await check(await read("never-counted", await api.token()));
    await check(await read("k".repeat(65), await api.token()));
    await check(await read("doc/read", null));
    await check(await read("doc/read", await api.token({ scopes: ["counters:write"] })));
  });

  it("GET /healthz, /openapi.json and /readyz (ready, then draining)", async () => {
    await expectDocumented("/healthz", "get", await api.node.app.request("/healthz"));
    await expectDocumented("/openapi.json", "get", await api.node.app.request("/openapi.json"));
    await expectDocumented("/readyz", "get", await api.node.app.request("/readyz"));
    // Last: a draining node stays draining.
    api.node.startDraining();
    const draining = await api.node.app.request("/readyz");
    expect(draining.status).toBe(503);
    await expectDocumented("/readyz", "get", draining);
  });

  it("the answers outside any operation are the unrouted problems the document names", async () => {
    for (const code of ["not_found", "method_not_allowed"]) expect(document.info.description).toContain(code);
    expect((await api.node.app.request("/nope")).status).toBe(404);
    expect((await api.node.app.request("/increment")).status).toBe(405);
  });
});
