import http from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { Deployment } from "../support/deployment.ts";

// SIGTERM with SHUTDOWN_DRAIN_DELAY_MS: for the delay the node still answers, but says it is not ready and
// asks every client to close its connection, so a load balancer and keep-alive clients move to other nodes
// before it stops listening.

const DRAIN_DELAY_MS = 2_000;

/** One request over `agent` (kept alive), with the raw headers Node read. */
function request(
  agent: http.Agent,
  url: string,
  options: { method?: string; token?: string; body?: string } = {},
): Promise<{ status: number; connection: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        agent,
        method: options.method ?? "GET",
        headers: {
          ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
          ...(options.body ? { "content-type": "application/json" } : {}),
        },
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection }));
      },
    );
    req.on("error", reject);
    req.end(options.body);
  });
}

describe("an API node draining on SIGTERM", () => {
  it("answers Connection: close and a 503 /readyz for the drain delay, still takes writes, then exits 0", {
    timeout: 60_000,
  }, async () => {
    const deployment = await Deployment.forTest();
    const api = await deployment.startApi({ SHUTDOWN_DRAIN_DELAY_MS: String(DRAIN_DELAY_MS) });
    const token = await deployment.token();
    const agent = new http.Agent({ keepAlive: true });
    const increment = () =>
      request(agent, `${api.url}/increment`, { method: "POST", token, body: '{"key":"drain","value":1}' });

    const before = await increment();
    expect(before).toEqual({ status: 202, connection: "keep-alive" });
    expect((await request(agent, `${api.url}/readyz`)).status).toBe(200);

    api.child.kill("SIGTERM");
    await api.waitForLog((line) => line.msg === "shutting down");
    // Well inside the delay.
    await sleep(DRAIN_DELAY_MS / 4);
    expect(await request(agent, `${api.url}/readyz`)).toEqual({ status: 503, connection: "close" });
    expect(await increment()).toEqual({ status: 202, connection: "close" });

    expect(await api.exited).toEqual({ code: 0, signal: null });
    agent.destroy();
  });
});
