import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ApiInstance, createApiInstance } from "../../api/instance.ts";
import { parseConfig } from "../../lib/config.ts";
import { createLogger } from "../../lib/logger.ts";
import { mintToken } from "../../lib/tokens.ts";
import { freePort } from "../../tools/servers/ports.ts";
import { TEST_SECRET } from "../support/api.ts";

// What an API node logs during a request: every line carries the request's id, and no token or secret
// reaches the output, whatever a log line is handed. The lines are captured in memory from the real logger.

let output = "";
let node: ApiInstance;
let token: string;

function lines(): Record<string, unknown>[] {
  return output
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

beforeAll(async () => {
  const logger = createLogger({
    level: "trace",
    role: "api",
    destination: {
      write: (line: string) => {
        output += line;
      },
    },
  });
  // Redis that is not there: every increment fails with a 503, which the app logs.
  const config = parseConfig({
    NODE_ENV: "test",
    REDIS_URL: `redis://127.0.0.1:${await freePort()}`,
    DATABASE_URL: "postgres://127.0.0.1:1/unused",
    JWT_SECRET: TEST_SECRET,
  });
  node = createApiInstance(config, logger);
  // The app logs no request headers itself; this route stands for a debug line someone adds one day.
  node.app.get("/test/log-the-request", (c) => {
    const headers = Object.fromEntries(c.req.raw.headers);
    c.var.logger.debug(
      {
        headers,
        request: { headers },
        authorization: c.req.header("authorization"),
        token: "t",
        secret: "s",
      },
      "the whole request",
    );
    return c.body(null, 204);
  });
  token = await mintToken({ secret: TEST_SECRET, subject: "logged", scopes: ["counters:write"] });
});
afterAll(async () => {
  node.redis.disconnect();
  await node.pool.end();
});

describe("request logging", () => {
  it("tags every line a request logs with its request id", async () => {
    const response = await node.app.request("/increment", {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "x-request-id": "req-logging-1" },
      body: JSON.stringify({ key: "a", value: 1 }),
    });
    expect(response.status).toBe(503);
    expect(response.headers.get("x-request-id")).toBe("req-logging-1");
    const logged = lines().filter((line) => line.requestId === "req-logging-1");
    // A Redis outage fails every request alike: at debug per request (the connection's own line says it).
    expect(logged).toEqual([
      expect.objectContaining({
        level: "debug",
        role: "api",
        code: "redis_unavailable",
        msg: expect.any(String),
        reason: expect.any(String),
      }),
    ]);

    // A generated id too, and one request's lines never carry another's id.
    const second = await node.app.request("/test/log-the-request");
    const secondId = second.headers.get("x-request-id");
    expect(secondId).toMatch(/^[0-9a-f-]{36}$/);
    expect(
      lines()
        .filter((line) => line.msg === "the whole request")
        .map((line) => line.requestId),
    ).toEqual([secondId]);
  });

  it("never writes a bearer token or a secret, in headers, fields or nested objects", async () => {
    output = "";
    const response = await node.app.request("/test/log-the-request", {
      headers: { authorization: `Bearer ${token}`, "x-request-id": "req-logging-2" },
    });
    expect(response.status).toBe(204);
    // Also the requests the app itself logs, with a valid and with a tampered token.
    await node.app.request("/increment", {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      body: JSON.stringify({ key: "a", value: 1 }),
    });
    await node.app.request("/increment", {
      method: "POST",
      headers: { authorization: `Bearer ${token}x` },
      body: JSON.stringify({ key: "a", value: 1 }),
    });

    const [logged] = lines().filter((line) => line.requestId === "req-logging-2");
    expect(logged).toMatchObject({
      msg: "the whole request",
      headers: { authorization: "[redacted]", "x-request-id": "req-logging-2" },
      request: { headers: { authorization: "[redacted]" } },
      authorization: "[redacted]",
      token: "[redacted]",
      secret: "[redacted]",
    });
    expect(lines().length).toBeGreaterThan(1);
    // Nor any part of one: header, claims or signature.
    for (const fragment of [token, ...token.split("."), TEST_SECRET]) expect(output).not.toContain(fragment);
  });
});
