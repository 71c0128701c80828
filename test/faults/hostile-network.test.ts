import { connect, type Socket } from "node:net";
import fc from "fast-check";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { shardKeys } from "../../lib/redis/keyspace.ts";
import type { ApiProcess } from "../support/deployment.ts";
import { Deployment } from "../support/deployment.ts";

// What a broken or hostile peer can do below HTTP, against a real `start:api` process: bytes that are not
// HTTP, framing that lies, headers that never end, a hundred pipelined requests. Node's HTTP parser answers
// most of it before Hono sees a request; whatever happens, the process must live on, keep answering, never
// store a write it did not acknowledge, and never send a 5xx for a client's mistake.

const STEP_TIMEOUT_MS = 5_000;

let deployment: Deployment;
let api: ApiProcess;
let host: string;
let port: number;
let token: string;
/** Every increment answered 202 in this file, so the dirty hash can be compared with it exactly. */
const accepted = new Map<string, bigint>();

beforeAll(async () => {
  deployment = await Deployment.create();
  api = await deployment.startApi();
  const url = new URL(api.url);
  host = url.hostname;
  port = Number(url.port);
  token = await deployment.token();
});
afterAll(() => deployment?.close());

// Log lines are checked per test, so one test's failure does not spill into the next.
let logsBefore = 0;
beforeEach(() => {
  logsBefore = api.logs.length;
});

// After every attack: the process is alive, answers /healthz and still takes a valid increment.
afterEach(async () => {
  expect(api.child.exitCode).toBeNull();
  expect(api.child.signalCode).toBeNull();
  const health = await fetch(`${api.url}/healthz`, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) });
  expect(health.status).toBe(200);
  const response = await fetch(`${api.url}/increment`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ key: "alive", value: 1 }),
    signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
  });
  expect(response.status).toBe(202);
  accepted.set("alive", (accepted.get("alive") ?? 0n) + 1n);
  await expectStoredExactlyTheAccepted();
  // A peer's misbehaviour is not the service's error: it must not log one (a hang-up mid-body once did).
  const logged = api.logs.slice(logsBefore);
  expect(logged.filter((line) => line.level === "error" || line.level === "fatal")).toEqual([]);
});

async function expectStoredExactlyTheAccepted(): Promise<void> {
  const stored = await deployment.redis.hgetall(shardKeys(deployment.prefix, 0).dirty);
  const expected = new Map([...accepted].map(([key, total]) => [key, total.toString()]));
  expect(new Map(Object.entries(stored))).toEqual(expected);
}

interface Conversation {
  /** Everything the server sent. */
  data: Buffer;
  /** The server closed (or reset) the connection before we gave up on it. */
  closedByServer: boolean;
}

/**
 * Opens a raw TCP connection, lets `act` write to it, and collects what comes back until `until` holds, the
 * server closes, or `timeoutMs` passes; the socket is destroyed in every case, so nothing outlives the test.
 */
function converse(
  act: (socket: Socket) => Promise<void> | void,
  options: { until?: (data: Buffer) => boolean; timeoutMs?: number } = {},
): Promise<Conversation> {
  const timeoutMs = options.timeoutMs ?? STEP_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let closedByServer = false;
    let settled = false;
    const socket = connect({ host, port });
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ data: Buffer.concat(chunks), closedByServer });
    };
    const timer = setTimeout(finish, timeoutMs);
    // A reset is one of the ways a server may refuse garbage: it counts as closing, not as a test error.
    socket.on("error", () => {
      closedByServer = true;
      finish();
    });
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      if (options.until?.(Buffer.concat(chunks))) finish();
    });
    socket.on("end", () => {
      closedByServer = true;
      finish();
    });
    // `act` destroying the socket itself ends the conversation too.
    socket.on("close", finish);
    socket.once("connect", () => {
      Promise.resolve(act(socket)).catch((error: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.destroy();
        reject(error);
      });
    });
  });
}

interface RawResponse {
  status: number;
  headers: Map<string, string>;
  body: string;
}

/** Splits what a server sent into HTTP/1.1 responses (Content-Length or chunked bodies); a torn tail is left. */
function parseResponses(data: Buffer): RawResponse[] {
  const responses: RawResponse[] = [];
  let at = 0;
  for (;;) {
    const headEnd = data.indexOf("\r\n\r\n", at);
    if (headEnd === -1) return responses;
    const [statusLine = "", ...headerLines] = data.subarray(at, headEnd).toString("latin1").split("\r\n");
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1]);
    if (!Number.isInteger(status)) throw new Error(`not an HTTP response: ${JSON.stringify(statusLine)}`);
    const headers = new Map(
      headerLines.map((line) => {
        const colon = line.indexOf(":");
        return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()] as const;
      }),
    );
    let cursor = headEnd + 4;
    let body: Buffer;
    if (headers.get("transfer-encoding")?.toLowerCase() === "chunked") {
      const parts: Buffer[] = [];
      for (;;) {
        const lineEnd = data.indexOf("\r\n", cursor);
        if (lineEnd === -1) return responses;
        const size = Number.parseInt(data.subarray(cursor, lineEnd).toString("latin1"), 16);
        cursor = lineEnd + 2;
        if (size === 0) {
          cursor += 2; // the empty trailer section
          break;
        }
        if (cursor + size + 2 > data.length) return responses;
        parts.push(data.subarray(cursor, cursor + size));
        cursor += size + 2;
      }
      body = Buffer.concat(parts);
    } else {
      const length = Number(headers.get("content-length") ?? "0");
      if (cursor + length > data.length) return responses;
      body = data.subarray(cursor, cursor + length);
      cursor += length;
    }
    responses.push({ status, headers, body: body.toString("utf8") });
    at = cursor;
  }
}

const request = (lines: string[], body = "") => `${lines.join("\r\n")}\r\n\r\n${body}`;

const incrementRequest = (body: string) =>
  request(
    [
      "POST /increment HTTP/1.1",
      "Host: tally.test",
      `Authorization: Bearer ${token}`,
      "Content-Type: application/json",
      `Content-Length: ${Buffer.byteLength(body)}`,
    ],
    body,
  );

/** A client error answered by Node's parser or by the app; a 5xx would be the service blaming itself. */
function expectClientErrorOrNothing(conversation: Conversation): void {
  const text = conversation.data.toString("latin1");
  if (text === "") {
    expect(conversation.closedByServer).toBe(true);
    return;
  }
  expect(text).toMatch(/^HTTP\/1\.1 4\d\d /);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("bytes that are not HTTP", () => {
  it("random bytes get a 4xx or a closed connection, never a hang or a crash", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 4096 }), async (bytes) => {
        // Then end our side: bytes that could still become a request (a lone "L" may be "LOCK ...") leave
        // the server waiting, and only the end of input tells it they never will.
        const conversation = await converse((socket) => void socket.end(bytes));
        expectClientErrorOrNothing(conversation);
        expect(conversation.closedByServer).toBe(true);
      }),
      { numRuns: 40 },
    );
  });

  // Node's parser (llhttp, strict mode) refuses each with a 400 and closes; blank lines before a request line
  // are allowed (RFC 9112 §2.2), so those alone are answered with nothing but the close our EOF asks for.
  it.each([
    ["no version", "GET /healthz\r\n\r\n", 400],
    ["an unknown version", "GET /healthz HTTP/9.9\r\n\r\n", 400],
    ["spaces in the method", "G E T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400],
    ["a trailing word", "POST /increment HTTP/1.1 please\r\nHost: x\r\n\r\n", 400],
    ["a bare LF header block", "GET /healthz HTTP/1.1\nHost: x\n\n", 400],
    ["a NUL in the path", "GET /hea\u0000lthz HTTP/1.1\r\nHost: x\r\n\r\n", 400],
    ["a header without a colon", "GET /healthz HTTP/1.1\r\nHost x\r\n\r\n", 400],
    ["a space before the colon", "GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", 400],
    ["a CR inside a header value", "GET /healthz HTTP/1.1\r\nHost: x\rInjected: y\r\n\r\n", 400],
    [
      "a TLS ClientHello on the plain port",
      "\u0016\u0003\u0001\u0002\u0000\u0001\u0000\u0001\u00fc\u0003\u0003",
      400,
    ],
    ["only line breaks", "\r\n\r\n\r\n\r\n", null],
  ])("a malformed request line or header: %s", async (_name, raw, status) => {
    const conversation = await converse((socket) => void socket.end(Buffer.from(raw, "latin1")));
    expect(conversation.closedByServer).toBe(true);
    expectClientErrorOrNothing(conversation);
    expect(parseResponses(conversation.data)[0]?.status ?? null).toBe(status);
  });
});

describe("framing that lies", () => {
  it("an oversized header block is refused with 431, not buffered without end", async () => {
    const headers = Array.from({ length: 200 }, (_, index) => `X-Pad-${index}: ${"p".repeat(200)}`);
    const conversation = await converse(
      (socket) => void socket.write(request(["GET /healthz HTTP/1.1", "Host: x", ...headers])),
      { until: (data) => data.includes("\r\n\r\n") },
    );
    expect(conversation.data.toString("latin1")).toMatch(/^HTTP\/1\.1 431 /);
  });

  it("a huge bearer token is refused with 431 before any verification", async () => {
    const conversation = await converse(
      (socket) =>
        void socket.write(
          incrementRequest('{"key":"huge-token","value":1}').replace(
            /Authorization: Bearer \S+/,
            `Authorization: Bearer ${"t".repeat(70_000)}`,
          ),
        ),
      { until: (data) => data.includes("\r\n\r\n") },
    );
    expect(conversation.data.toString("latin1")).toMatch(/^HTTP\/1\.1 431 /);
  });

  it("Content-Length larger than the body, then close: nothing stored", async () => {
    for (const close of ["end", "destroy"] as const) {
      const body = JSON.stringify({ key: `short-${close}`, value: 1 });
      const conversation = await converse(async (socket) => {
        socket.write(incrementRequest(body).replace(/Content-Length: \d+/, "Content-Length: 1000"));
        // Long enough for the server to have read the headers and be waiting for the rest of the body.
        await sleep(300);
        if (close === "end") socket.end();
        else socket.destroy();
      });
      // No answer can have been a 202: the body never arrived whole.
      expect(conversation.data.toString("latin1")).not.toMatch(/^HTTP\/1\.1 2/);
    }
  });

  it("a chunked body cut off mid-chunk, then close: nothing stored", async () => {
    for (const close of ["end", "destroy"] as const) {
      const conversation = await converse(async (socket) => {
        socket.write(
          request(
            [
              "POST /increment HTTP/1.1",
              "Host: x",
              `Authorization: Bearer ${token}`,
              "Transfer-Encoding: chunked",
            ],
            `40\r\n{"key":"chunk-${close}","value":1}`,
          ),
        );
        await sleep(300);
        if (close === "end") socket.end();
        else socket.destroy();
      });
      expect(conversation.data.toString("latin1")).not.toMatch(/^HTTP\/1\.1 2/);
    }
  });

  it("Content-Length larger than the body, connection held open: no answer, nothing stored", async () => {
    const body = JSON.stringify({ key: "held", value: 1 });
    const conversation = await converse(
      (socket) =>
        void socket.write(incrementRequest(body).replace(/Content-Length: \d+/, "Content-Length: 64")),
      { timeoutMs: 1_000 },
    );
    expect(conversation.data.length).toBe(0);
  });

  it("Content-Length smaller than the body: the rest is a second, malformed request, nothing stored", async () => {
    const body = JSON.stringify({ key: "smuggled", value: 1 });
    const conversation = await converse(
      (socket) =>
        void socket.write(incrementRequest(body).replace(/Content-Length: \d+/, "Content-Length: 5")),
    );
    // Node's parser reads the whole packet at once and meets the malformed second request before the app has
    // answered the first (five bytes of JSON, a 400 too): its own 400 and the close may be all that arrives.
    expect(conversation.closedByServer).toBe(true);
    const statuses = parseResponses(conversation.data).map((response) => response.status);
    expect(statuses[0]).toBe(400);
    for (const status of statuses) expect(status).toBeGreaterThanOrEqual(400);
    for (const status of statuses) expect(status).toBeLessThan(500);
  });

  it("Content-Length together with Transfer-Encoding is refused (no request smuggling)", async () => {
    const body = JSON.stringify({ key: "te-cl", value: 1 });
    const chunked = `${Buffer.byteLength(body).toString(16)}\r\n${body}\r\n0\r\n\r\n`;
    const conversation = await converse(
      (socket) =>
        void socket.write(
          request(
            [
              "POST /increment HTTP/1.1",
              "Host: x",
              `Authorization: Bearer ${token}`,
              "Content-Length: 4",
              "Transfer-Encoding: chunked",
            ],
            chunked,
          ),
        ),
      { until: (data) => data.includes("\r\n\r\n") },
    );
    expect(conversation.data.toString("latin1")).toMatch(/^HTTP\/1\.1 400 /);
  });

  it("a malformed chunk size is refused", async () => {
    const conversation = await converse(
      (socket) =>
        void socket.write(
          request(
            [
              "POST /increment HTTP/1.1",
              "Host: x",
              `Authorization: Bearer ${token}`,
              "Transfer-Encoding: chunked",
            ],
            'zz\r\n{"key":"bad-chunk","value":1}\r\n0\r\n\r\n',
          ),
        ),
      { until: (data) => data.includes("\r\n\r\n") },
    );
    expectClientErrorOrNothing(conversation);
    expect(conversation.data.toString("latin1")).toMatch(/^HTTP\/1\.1 400 /);
  });

  it("a declared 100 MB body is refused with 413 at once, without waiting for it", async () => {
    const started = Date.now();
    const conversation = await converse(
      (socket) =>
        void socket.write(incrementRequest("").replace(/Content-Length: \d+/, "Content-Length: 100000000")),
      { until: (data) => parseResponses(data).length >= 1 },
    );
    const [response] = parseResponses(conversation.data);
    expect(response?.status).toBe(413);
    expect(response?.headers.get("content-type")).toBe("application/problem+json");
    expect(Date.now() - started).toBeLessThan(STEP_TIMEOUT_MS);
  });

  it("a chunked body that grows past the limit is cut off with 413", async () => {
    const conversation = await converse(
      async (socket) => {
        socket.write(
          request([
            "POST /increment HTTP/1.1",
            "Host: x",
            `Authorization: Bearer ${token}`,
            "Transfer-Encoding: chunked",
          ]),
        );
        const chunk = " ".repeat(4096);
        for (let sent = 0; sent < 64 && !socket.destroyed; sent++) {
          socket.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`);
          await sleep(5);
        }
      },
      { until: (data) => parseResponses(data).length >= 1 },
    );
    const [response] = parseResponses(conversation.data);
    expect(response?.status).toBe(413);
    expect(response?.headers.get("content-type")).toBe("application/problem+json");
  });
});

describe("slow and many", () => {
  it("slowloris: 60 connections trickling headers or a body starve no one, and end without an answer", async () => {
    let stop = false;
    const trickle = (index: number) =>
      converse(
        async (socket) => {
          // Half trickle a header that never ends, half a body that never completes.
          socket.write(
            index % 2 === 0
              ? `POST /increment HTTP/1.1\r\nHost: x\r\nX-Slow-${index}: `
              : incrementRequest("").replace("Content-Length: 0", "Content-Length: 1000"),
          );
          while (!stop && !socket.destroyed) {
            socket.write(index % 2 === 0 ? "a" : " ");
            await sleep(50);
          }
          socket.destroy();
        },
        { timeoutMs: 5_000 },
      );
    const slow = Array.from({ length: 60 }, (_, index) => trickle(index));
    // While they trickle, normal clients are served as usual.
    await sleep(500);
    const health = await fetch(`${api.url}/healthz`, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) });
    expect(health.status).toBe(200);
    const write = await fetch(`${api.url}/increment`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      body: JSON.stringify({ key: "beside-slowloris", value: 7 }),
      signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
    });
    expect(write.status).toBe(202);
    accepted.set("beside-slowloris", 7n);
    stop = true;
    const conversations = await Promise.all(slow);
    // None of them got an answer: their requests never became whole.
    for (const conversation of conversations) expect(conversation.data.length).toBe(0);
  });

  it("100 pipelined requests on one connection are answered in order, and exactly the valid ones stored", async () => {
    const bodies = Array.from({ length: 100 }, (_, index) =>
      index % 10 === 9 ? `{"key":"pipelined","value":` : JSON.stringify({ key: "pipelined", value: index }),
    );
    const conversation = await converse(
      (socket) => void socket.write(bodies.map((body) => incrementRequest(body)).join("")),
      {
        until: (data) => parseResponses(data).length >= bodies.length,
      },
    );
    const responses = parseResponses(conversation.data);
    expect(responses.map((response) => response.status)).toEqual(
      bodies.map((_, index) => (index % 10 === 9 ? 400 : 202)),
    );
    for (const response of responses.filter((response) => response.status === 400)) {
      expect(response.headers.get("content-type")).toBe("application/problem+json");
      expect((JSON.parse(response.body) as { status: unknown }).status).toBe(400);
    }
    const total = bodies.reduce((sum, _, index) => sum + (index % 10 === 9 ? 0n : BigInt(index)), 0n);
    accepted.set("pipelined", (accepted.get("pipelined") ?? 0n) + total);
  });
});
