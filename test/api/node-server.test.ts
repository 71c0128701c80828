import { request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestApi, readProblem, type TestApi } from "../support/api.ts";

// The API as @hono/node-server serves it in production. Under the adapter the app reads request headers
// from node's IncomingMessage and hands the adapter responses whose headers are a plain object
// (api/request-headers.ts, api/respond.ts); `app.request()` in the other tests takes hono's own way, so
// this file is what shows that the production path carries every header both ways.

let api: TestApi;
let base: string;
let close: () => Promise<void>;
beforeAll(async () => {
  api = await createTestApi({ RATE_LIMIT_POINTS: "4", RATE_LIMIT_DURATION_S: "60", MAX_BATCH_SIZE: "10" });
  const server = createAdaptorServer({ fetch: api.node.app.fetch });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  close = () => new Promise((resolve) => server.close(() => resolve()));
});
afterAll(async () => {
  await close();
  await api.close();
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

async function post(path: string, body: unknown, headers: Record<string, string>): Promise<Response> {
  return fetch(`${base}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

/** A POST with a chunked body (no Content-Length), which fetch cannot send. */
function postChunked(
  path: string,
  chunks: string[],
  token: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest(
      `${base}${path}`,
      { method: "POST", headers: { authorization: `Bearer ${token}`, "transfer-encoding": "chunked" } },
      (response) => {
        let body = "";
        response.on("data", (chunk: Buffer) => {
          body += chunk.toString("utf8");
        });
        response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
      },
    );
    outgoing.on("error", reject);
    for (const chunk of chunks) outgoing.write(chunk);
    outgoing.end();
  });
}

describe("the API under @hono/node-server", () => {
  it("reads the bearer token, the request id and the Idempotency-Key, and answers with every header", async () => {
    const token = await api.token();
    const headers = {
      authorization: `Bearer ${token}`,
      "x-request-id": "edge-7f3a",
      "idempotency-key": "k-1",
    };
    const first = await post("/increment", { key: "node-server", value: 2 }, headers);
    expect(first.status).toBe(202);
    expect(first.headers.get("x-request-id")).toBe("edge-7f3a");
    expect(first.headers.get("ratelimit-policy")).toBe('"default";q=4;w=60');
    expect(first.headers.get("ratelimit")).toMatch(/^"default";r=3;t=\d+$/);
    expect(first.headers.get("idempotent-replayed")).toBeNull();

    const replay = await post("/increment", { key: "node-server", value: 2 }, headers);
    expect(replay.status).toBe(202);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(replay.headers.get("ratelimit")).toMatch(/^"default";r=2;t=\d+$/);

    const malformed = await post(
      "/increment",
      { key: "node-server", value: 2 },
      {
        authorization: `Bearer ${token}`,
        "idempotency-key": "x".repeat(300),
      },
    );
    expect(malformed.status).toBe(400);
    expect((await readProblem(malformed)).code).toBe("invalid_idempotency_key");
    expect(malformed.headers.get("x-request-id")).toMatch(UUID);
  });

  it("answers problems with the request id, the rate-limit state and the problem's own headers", async () => {
    const unauthenticated = await post("/increment", { key: "k", value: 1 }, {});
    expect(unauthenticated.status).toBe(401);
    expect(unauthenticated.headers.get("www-authenticate")).toBe('Bearer realm="tally"');
    const problem = await readProblem(unauthenticated);
    expect(problem.requestId).toMatch(UUID);
    expect(unauthenticated.headers.get("x-request-id")).toBe(problem.requestId);

    const token = await api.token();
    const batch = { increments: [1, 2, 3, 4, 5].map((value) => ({ key: "b", value })) };
    const limited = await post("/increments", batch, { authorization: `Bearer ${token}` });
    expect(limited.status).toBe(429);
    expect(limited.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(limited.headers.get("ratelimit-policy")).toBe('"default";q=4;w=60');
    expect((await readProblem(limited)).code).toBe("rate_limited");
  });

  it("refuses a declared or a chunked body over the limit, and reads a chunked one under it", async () => {
    const token = await api.token();
    const tooLong = await fetch(`${base}/increment`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      body: JSON.stringify({ key: "k".repeat(api.config.http.bodyLimitBytes), value: 1 }),
    });
    expect(tooLong.status).toBe(413);

    const chunkedTooLong = await postChunked(
      "/increment",
      ['{"key":"', "k".repeat(api.config.http.bodyLimitBytes), '","value":1}'],
      token,
    );
    expect(chunkedTooLong.status).toBe(413);
    const chunked = await postChunked("/increment", ['{"key":"chun', 'ked","value":1}'], token);
    expect(chunked).toEqual({ status: 202, body: "" });
  });

  it("gives every operation's answer, and a 404 and a 405, a request id", async () => {
    const token = await api.token({ scopes: ["counters:read"] });
    const answers = await Promise.all([
      fetch(`${base}/healthz`),
      fetch(`${base}/readyz`),
      fetch(`${base}/openapi.json`),
      fetch(`${base}/counters/never-counted`, { headers: { authorization: `Bearer ${token}` } }),
      fetch(`${base}/nowhere`),
      fetch(`${base}/increment`),
    ]);
    expect(answers.map((answer) => answer.status)).toEqual([200, 200, 200, 404, 404, 405]);
    for (const answer of answers) expect(answer.headers.get("x-request-id")).toMatch(UUID);
    expect(answers[0]?.headers.get("content-type")).toBe("application/json");
    expect(answers[2]?.headers.get("cache-control")).toBe("public, max-age=300");
    expect(answers[5]?.headers.get("allow")).toBe("POST");
  });
});
