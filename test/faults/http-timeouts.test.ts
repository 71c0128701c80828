import { connect } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiProcess } from "../support/deployment.ts";
import { Deployment } from "../support/deployment.ts";

// An API node exposed without a proxy in front, against clients that hold a request open: a `start:api`
// process must give up on them after HTTP_HEADERS_TIMEOUT_MS and HTTP_REQUEST_TIMEOUT_MS, not Node's
// default five minutes, and must not cut an idle keep-alive connection for it.

const HEADERS_TIMEOUT_MS = 1_000;
const REQUEST_TIMEOUT_MS = 2_000;
// Node checks its timeouts on a timer, not per byte: allow for that period and a loaded machine.
const SLACK_MS = 2_500;

let deployment: Deployment;
let api: ApiProcess;
let token: string;
beforeAll(async () => {
  deployment = await Deployment.create({
    env: {
      HTTP_HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS),
      HTTP_REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
    },
  });
  api = await deployment.startApi();
  token = await deployment.token();
});
afterAll(() => deployment?.close());

/** Sends `request` (and then nothing), and reports what came back and when the server closed, if it did. */
function sendAndWait(request: string, waitMs: number): Promise<{ reply: string; closedAfterMs?: number }> {
  const { hostname, port } = new URL(api.url);
  return new Promise((resolve) => {
    const began = performance.now();
    let reply = "";
    const socket = connect({ host: hostname, port: Number(port) }, () => socket.write(request));
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ reply });
    }, waitMs);
    socket.on("data", (chunk: Buffer) => {
      reply += chunk.toString("latin1");
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ reply, closedAfterMs: performance.now() - began });
    });
  });
}

describe("HTTP timeouts without a proxy in front", () => {
  it("headers that never end are answered 408 and closed after HTTP_HEADERS_TIMEOUT_MS", async () => {
    const { reply, closedAfterMs } = await sendAndWait(
      "POST /increment HTTP/1.1\r\nHost: x\r\nX-Slow: ",
      REQUEST_TIMEOUT_MS + SLACK_MS * 2,
    );
    expect(closedAfterMs).toBeDefined();
    expect(closedAfterMs).toBeLessThan(HEADERS_TIMEOUT_MS + SLACK_MS);
    expect(reply).toMatch(/^HTTP\/1\.1 408 /);
  });

  it("a body that never completes is closed after HTTP_REQUEST_TIMEOUT_MS, and nothing is stored", async () => {
    const head = `POST /increment HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n`;
    const { closedAfterMs } = await sendAndWait(
      `${head}{"key":"never-finished",`,
      REQUEST_TIMEOUT_MS + SLACK_MS * 2,
    );
    expect(closedAfterMs).toBeDefined();
    expect(closedAfterMs).toBeLessThan(REQUEST_TIMEOUT_MS + SLACK_MS);
    expect(await deployment.counters()).toEqual(new Map());
    expect(await deployment.isDrained()).toBe(true);
  });

  it("an idle keep-alive connection outlives both timeouts and still serves", async () => {
    const { hostname, port } = new URL(api.url);
    const socket = connect({ host: hostname, port: Number(port) });
    socket.on("error", () => {});
    const replies: string[] = [];
    socket.on("data", (chunk: Buffer) => replies.push(chunk.toString("latin1")));
    const request = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    try {
      socket.write(request);
      await sleep(REQUEST_TIMEOUT_MS + SLACK_MS);
      expect(socket.destroyed).toBe(false);
      socket.write(request);
      await sleep(300);
      expect(replies.join("").match(/HTTP\/1\.1 200 /g)).toHaveLength(2);
    } finally {
      socket.destroy();
    }
  });
});
