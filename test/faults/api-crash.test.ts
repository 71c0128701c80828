import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { exactlyOnceViolations, Load, type SentIncrement } from "../../tools/load/accounted.ts";
import { sendIncrement as send } from "../../tools/load/increment.ts";
import { type RedisServer, startRedis } from "../../tools/servers/redis.ts";
import { waitFor } from "../harness/fixtures.ts";
import { type ApiProcess, Deployment } from "../support/deployment.ts";

// One of two API processes ended under load, by kill -9 and by SIGTERM. API nodes hold nothing: a 202 is
// sent only once Redis has the write, so a dead node can only leave its in-flight requests unknown, and a
// draining node must answer every request it had already taken.
//
// An API node answers in about a millisecond, so a request is rarely inside it at the instant of a signal.
// To make that instant certain, Redis writes are paused (CLIENT PAUSE … WRITE): requests then pile up inside
// the nodes, taken and unanswered, and the signal lands on them. Hence a private Redis, whose pause stalls
// no other test file.

const PAUSE_MS = 4_000;
// Long enough for the parked requests to reach the node, far shorter than the pause.
const PARK_MS = 1_000;
const PARKED = 10;

let deployment: Deployment | undefined;
let redis: RedisServer | undefined;
afterEach(async () => {
  await deployment?.close();
  deployment = undefined;
  await redis?.destroy();
  redis = undefined;
});

/** One increment outside the load generator, recorded the way the load records its own. */
async function sendIncrement(
  target: string,
  token: string,
  key: string,
  value: number,
): Promise<SentIncrement> {
  const startedAt = performance.now();
  const { outcome, status } = await send(target, token, { key, value }, 30_000);
  return { kind: "increment", key, value, outcome, status, target, startedAt, endedAt: performance.now() };
}

/** Two API nodes and a syncer on a private Redis, under load spread over both nodes. */
async function twoNodesUnderLoad() {
  const server = await startRedis({ appendOnly: false });
  redis = server;
  // Parked requests must outwait the pause rather than time out into 503s.
  const d = await Deployment.create({ redisUrl: server.url, env: { REDIS_COMMAND_TIMEOUT_MS: "15000" } });
  deployment = d;
  const ending = await d.startApi();
  const survivor = await d.startApi();
  await d.startSyncer();
  const token = await d.token();
  // What a load balancer would route to; the test takes the ending node out, as a balancer would.
  const routing = { targets: [ending.url, survivor.url] };
  const load = new Load({
    targets: () => routing.targets,
    token,
    concurrency: 8,
    timeoutMs: 30_000,
    resetKeys: 2,
  }).start();
  await load.waitForAccepted(300);
  return { d, ending, survivor, token, routing, load };
}

/** Pauses Redis writes and sends increments to `node`, which it takes and cannot answer until the pause ends. */
async function parkRequests(
  d: Deployment,
  node: ApiProcess,
  token: string,
): Promise<Promise<SentIncrement>[]> {
  await d.redis.call("CLIENT", "PAUSE", String(PAUSE_MS), "WRITE");
  const parked = Array.from({ length: PARKED }, (_, i) =>
    sendIncrement(node.url, token, `parked-${i}`, i + 1),
  );
  await sleep(PARK_MS);
  return parked;
}

describe("an API node ends under load", () => {
  it("kill -9: its in-flight requests become unknown, the survivor is unaffected, exactly once", {
    timeout: 60_000,
  }, async () => {
    const { d, ending, survivor, token, routing, load } = await twoNodesUnderLoad();
    const parked = await parkRequests(d, ending, token);

    const killAt = performance.now();
    expect(await ending.stop("SIGKILL")).toBeNull();
    expect((await ending.exited).signal).toBe("SIGKILL");
    const deadAt = performance.now();
    const parkedResults = await Promise.all(parked);
    // Like a load balancer that has not noticed yet: requests keep going to the dead node for a while.
    await waitFor(async () => load.sent.some((r) => r.target === ending.url && r.startedAt > deadAt), {
      message: "no request reached the dead node after the kill",
    });
    routing.targets = [survivor.url];
    await load.waitForAccepted(300);
    await load.stop();
    await d.waitForDrain();

    // In flight at the kill (the parked ones, and the load's own stuck behind the pause): no answer at all.
    // Redis may or may not have applied them; the exactly-once check below allows either, never twice.
    const toDead = [...load.sent.filter((r) => r.target === ending.url), ...parkedResults];
    const inFlightAtKill = toDead.filter((r) => r.startedAt < killAt && r.endedAt > killAt);
    expect(inFlightAtKill.length).toBeGreaterThanOrEqual(PARKED);
    expect(inFlightAtKill.filter((r) => r.outcome !== "unknown" || r.status !== undefined)).toEqual([]);
    // Sent to a dead process: refused, never a 202.
    const afterDeath = toDead.filter((r) => r.startedAt > deadAt);
    expect(afterDeath.length).toBeGreaterThan(0);
    expect(afterDeath.filter((r) => r.outcome !== "unknown" || r.status !== undefined)).toEqual([]);
    // The survivor never noticed.
    expect(load.sent.filter((r) => r.target === survivor.url && r.outcome !== "accepted")).toEqual([]);
    expect(exactlyOnceViolations([...load.sent, ...parkedResults], await d.counters())).toEqual([]);
  });

  it("SIGTERM: it stops taking connections, answers every request it had taken, exits 0, exactly once", {
    timeout: 60_000,
  }, async () => {
    const { d, ending, survivor, token, routing, load } = await twoNodesUnderLoad();
    const parked = await parkRequests(d, ending, token);

    const termAt = performance.now();
    ending.child.kill("SIGTERM");
    await ending.waitForLog((line) => line.msg === "shutting down");
    // Shutdown has begun: the node must never again say it is ready. (It answers no /readyz at all: it
    // stops listening in the same tick as it starts draining, so a balancer sees it vanish, not a 503.)
    const readyz = await fetch(`${ending.url}/readyz`, { signal: AbortSignal.timeout(5_000) }).then(
      (response) => response.status,
      () => "no connection",
    );
    expect(readyz).not.toBe(200);
    routing.targets = [survivor.url];

    const parkedResults = await Promise.all(parked);
    // exited, not stop(): a second SIGTERM would force the exit (code 1) and cut the drain short. Soft, so
    // a failed drain still reports what happened to the requests below.
    expect.soft(await ending.exited).toEqual({ code: 0, signal: null });
    // Taken before the SIGTERM (none had an answer yet, as the pause was still on), answered after it.
    expect(parkedResults.filter((r) => r.endedAt < termAt)).toEqual([]);
    expect(parkedResults.filter((r) => r.status !== 202)).toEqual([]);
    await load.waitForAccepted(300);
    await load.stop();
    await d.waitForDrain();

    // Every load request the node had before the SIGTERM was answered 202 too.
    const takenBeforeTerm = load.sent.filter((r) => r.target === ending.url && r.startedAt < termAt);
    expect(takenBeforeTerm.filter((r) => r.outcome !== "accepted")).toEqual([]);
    expect(load.sent.filter((r) => r.target === survivor.url && r.outcome !== "accepted")).toEqual([]);
    expect(exactlyOnceViolations([...load.sent, ...parkedResults], await d.counters())).toEqual([]);
  });
});
