import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { shardKeys } from "../../lib/redis/keyspace.ts";
import { MAX_KEY_BYTES } from "../../lib/settings.ts";
import { createTestApi, readProblem, type TestApi } from "../support/api.ts";

let api: TestApi;
let token: string;
beforeAll(async () => {
  api = await createTestApi({ BODY_LIMIT_BYTES: "2048" });
  token = await api.token();
});
afterAll(() => api.close());

async function expectProblem(response: Response, status: number, code: string) {
  expect(response.status).toBe(status);
  expect(response.headers.get("content-type")).toBe("application/problem+json");
  const problem = await readProblem(response);
  expect(problem).toMatchObject({ status, code, type: `urn:tally:problem:${code}` });
  expect(problem.requestId).toBe(response.headers.get("x-request-id"));
  return problem;
}

const dirtyHash = () => api.node.redis.hgetall(shardKeys(api.prefix, 0).dirty);

describe("POST /increment: rejected bodies are 400, say why and store nothing", () => {
  const NOT_JSON = "the body is not valid JSON";
  const NOT_AN_OBJECT = "the body must be a JSON object";
  const cases: [name: string, body: string, errors: { pointer: string; detail: string }[] | string][] = [
    ["empty body", "", "the body is empty: send a JSON object"],
    ["not JSON", "key=a&value=1", NOT_JSON],
    ["truncated JSON", '{"key":"a","value":1', NOT_JSON],
    ["JSON array", '[{"key":"a","value":1}]', [{ pointer: "", detail: `${NOT_AN_OBJECT}, not an array` }]],
    ["JSON string", '"a"', [{ pointer: "", detail: NOT_AN_OBJECT }]],
    ["JSON null", "null", [{ pointer: "", detail: NOT_AN_OBJECT }]],
    [
      "empty object",
      "{}",
      [
        { pointer: "/key", detail: "key is required" },
        { pointer: "/value", detail: "value is required" },
      ],
    ],
    ["missing key", '{"value":1}', [{ pointer: "/key", detail: "key is required" }]],
    ["missing value", '{"key":"a"}', [{ pointer: "/value", detail: "value is required" }]],
    ["empty key", '{"key":"","value":1}', [{ pointer: "/key", detail: "key must not be empty" }]],
    ["numeric key", '{"key":5,"value":1}', [{ pointer: "/key", detail: "key must be a string" }]],
    ["null key", '{"key":null,"value":1}', [{ pointer: "/key", detail: "key must be a string" }]],
    [
      "key too long",
      JSON.stringify({ key: "k".repeat(257), value: 1 }),
      [{ pointer: "/key", detail: "key must be at most 256 characters" }],
    ],
    [
      "key with NUL",
      '{"key":"a\\u0000b","value":1}',
      [{ pointer: "/key", detail: "key must not contain the NUL character" }],
    ],
    [
      "key with a lone surrogate",
      '{"key":"a\\ud800b","value":1}',
      [{ pointer: "/key", detail: "key must be well-formed Unicode (no lone surrogates)" }],
    ],
    [
      "fractional value",
      '{"key":"a","value":1.5}',
      [{ pointer: "/value", detail: "value must be an integer" }],
    ],
    ["string value", '{"key":"a","value":"1"}', [{ pointer: "/value", detail: "value must be an integer" }]],
    [
      "boolean value",
      '{"key":"a","value":true}',
      [{ pointer: "/value", detail: "value must be an integer" }],
    ],
    ["null value", '{"key":"a","value":null}', [{ pointer: "/value", detail: "value must be an integer" }]],
    [
      "value above 2^53-1",
      '{"key":"a","value":9007199254740992}',
      [{ pointer: "/value", detail: "value must be within ±(2^53−1)" }],
    ],
    [
      "value below -(2^53-1)",
      '{"key":"a","value":-9007199254740992}',
      [{ pointer: "/value", detail: "value must be within ±(2^53−1)" }],
    ],
    [
      "huge exponent",
      '{"key":"a","value":1e400}',
      [{ pointer: "/value", detail: "value must be an integer" }],
    ],
    [
      "unknown field",
      '{"key":"a","value":1,"extra":true}',
      [{ pointer: "/extra", detail: 'unexpected field "extra": the body has only key and value' }],
    ],
  ];

  it.each(cases)("%s", async (_name, body, expected) => {
    const problem = await expectProblem(await api.increment(body, token), 400, "invalid_body");
    if (typeof expected === "string") {
      expect(problem.detail).toContain(expected);
      expect(problem.errors).toBeUndefined();
    } else {
      expect(problem.errors).toEqual(expected);
      expect(problem.detail).toBe(expected.map((error) => error.detail).join("; "));
    }
    expect(await dirtyHash()).toEqual({});
  });

  it("names every failing field with a JSON pointer", async () => {
    const problem = await expectProblem(
      await api.increment({ key: "", value: 0.5 }, token),
      400,
      "invalid_body",
    );
    expect(problem.errors).toEqual([
      { pointer: "/key", detail: "key must not be empty" },
      { pointer: "/value", detail: "value must be an integer" },
    ]);
  });

  it("counts characters, not UTF-16 units or bytes, against the key limit", async () => {
    expect((await api.increment({ key: "🦄".repeat(256), value: 1 }, token)).status).toBe(202);
    await expectProblem(await api.increment({ key: "🦄".repeat(257), value: 1 }, token), 400, "invalid_body");
  });
});

describe("POST /increment at MAX_KEY_LENGTH's documented maximum", () => {
  let widest: TestApi;
  beforeAll(async () => {
    widest = await createTestApi({ MAX_KEY_LENGTH: String(MAX_KEY_BYTES), BODY_LIMIT_BYTES: "65536" });
  });
  afterAll(() => widest.close());

  it("refuses a key over 2048 bytes in UTF-8 even when it has fewer characters than the limit", async () => {
    const widestToken = await widest.token();
    expect((await widest.increment({ key: "k".repeat(MAX_KEY_BYTES), value: 1 }, widestToken)).status).toBe(
      202,
    );
    // 1,025 characters, 2,050 bytes: the index limit, not the character limit, refuses it.
    const problem = await expectProblem(
      await widest.increment({ key: "é".repeat(1_025), value: 1 }, widestToken),
      400,
      "invalid_body",
    );
    expect(problem.errors).toEqual([
      { pointer: "/key", detail: `key must be at most ${MAX_KEY_BYTES} bytes in UTF-8` },
    ]);
  });

  it("counts bytes exactly at the limit, where three-byte characters meet it", async () => {
    const widestToken = await widest.token();
    const threeBytes = "€";
    const fits = threeBytes.repeat(Math.floor(MAX_KEY_BYTES / 3));
    expect((await widest.increment({ key: `${fits}kk`, value: 1 }, widestToken)).status).toBe(202);
    await expectProblem(
      await widest.increment({ key: `${fits}kkk`, value: 1 }, widestToken),
      400,
      "invalid_body",
    );
    // Surrogate pairs: two UTF-16 units, four bytes.
    const pairs = "😀".repeat(MAX_KEY_BYTES / 4);
    expect((await widest.increment({ key: pairs, value: 1 }, widestToken)).status).toBe(202);
    await expectProblem(
      await widest.increment({ key: `${pairs}k`, value: 1 }, widestToken),
      400,
      "invalid_body",
    );
  });
});

describe("POST /increment: other client mistakes", () => {
  it("answers 413 for a body over the limit, before reading it as JSON", async () => {
    const body = JSON.stringify({ key: "a", value: 1, pad: "x".repeat(3_000) });
    await expectProblem(await api.increment(body, token), 413, "payload_too_large");
  });

  it("answers 422 when the pending total would leave the 64-bit range, and stores nothing more", async () => {
    const nearMax = (2n ** 63n - 10n).toString();
    await api.node.redis.hset(shardKeys(api.prefix, 0).dirty, "edge", nearMax);
    await expectProblem(await api.increment({ key: "edge", value: 11 }, token), 422, "counter_out_of_range");
    expect((await dirtyHash()).edge).toBe(nearMax);
    expect((await api.increment({ key: "edge", value: 9 }, token)).status).toBe(202);
  });

  it("answers 405 with Allow for a wrong method and 404 for an unknown path", async () => {
    const wrongMethod = await api.node.app.request("/increment", { method: "GET" });
    await expectProblem(wrongMethod, 405, "method_not_allowed");
    expect(wrongMethod.headers.get("allow")).toBe("POST");
    await expectProblem(await api.node.app.request("/nope"), 404, "not_found");
  });
});
