import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Problem } from "../../api/problem.ts";
import { exactlyOnceViolations, Load } from "../../tools/load/accounted.ts";
import { waitFor } from "../harness/fixtures.ts";
import { type ApiProcess, Deployment } from "../support/deployment.ts";
import {
  composeServerParameters,
  failTimeoutOf,
  finalUpstream,
  type Nginx,
  startNginx,
  upstreams,
} from "../support/nginx.ts";

// tally as compose.yaml runs it: nginx with the repository's deploy/nginx/nginx.conf in front of three API
// nodes, two syncers, one Redis, one Postgres. Only what compose.yaml keeps outside nginx.conf differs: the
// upstream servers (127.0.0.1 ports here, `api:3333` there, with the same passive health-check parameters,
// copied from compose's file) and the listen address.
//
// Then one API node is killed under load. nginx has no active health checks (open source), so it learns from
// the traffic: refused connections. A POST whose connection was refused never reached a node and is passed to
// the next one; a POST already sent to the node when it died gets a 502 (unknown: nginx must not retry it).

const LOAD_CONCURRENCY = 12;
const BODY_LIMIT_BYTES = 16_384;

describe("nginx in front of three API nodes (the compose topology)", () => {
  let deployment: Deployment | undefined;
  let nginx: Nginx | undefined;
  let apis: ApiProcess[] = [];
  // Requests of the first test, left out of the second one's accounting.
  const configRequestIds = new Set<string>();

  beforeAll(async () => {
    const d = await Deployment.create();
    deployment = d;
    apis = await Promise.all([d.startApi(), d.startApi(), d.startApi()]);
    await Promise.all([d.startSyncer(), d.startSyncer()]);
    nginx = await startNginx(apis.map((api) => api.url));
  });

  afterAll(async () => {
    // Stopped here even when a test failed midway; a no-op when the test stopped it already.
    await nginx?.stop();
    await deployment?.close();
  });

  function running(): { d: Deployment; proxy: Nginx } {
    if (!deployment || !nginx) throw new Error("beforeAll did not finish");
    return { d: deployment, proxy: nginx };
  }

  it("passes the request id through, and refuses a body over BODY_LIMIT_BYTES itself", async () => {
    const { d, proxy } = running();
    const post = async (body: string, headers: Record<string, string> = {}) => {
      const response = await fetch(`${proxy.url}/increment`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body,
      });
      configRequestIds.add(response.headers.get("x-request-id") ?? "");
      return response;
    };

    // A client's id reaches the API (it is in the API's own problem body) and comes back.
    const given = await post("{}", { "x-request-id": "nginx-test-given-id" });
    expect(given.status).toBe(401);
    expect(given.headers.get("x-request-id")).toBe("nginx-test-given-id");
    expect(((await given.json()) as Problem).requestId).toBe("nginx-test-given-id");

    // Without one (or with one the API would not keep), nginx's $request_id is the id everywhere.
    const withoutUsableId: Record<string, string>[] = [{}, { "x-request-id": "not valid!" }];
    for (const headers of withoutUsableId) {
      const generated = await post("{}", headers);
      expect(generated.status).toBe(401);
      const id = generated.headers.get("x-request-id");
      expect(id).toMatch(/^[0-9a-f]{32}$/);
      expect(((await generated.json()) as Problem).requestId).toBe(id);
    }

    // client_max_body_size = BODY_LIMIT_BYTES: a body at the limit reaches a node and is accepted (value 0
    // counts nothing, so the exactly-once check below is unaffected); one byte more is nginx's own 413.
    const token = await d.token();
    const increment = JSON.stringify({ key: "nginx-limit", value: 0 });
    const auth = { authorization: `Bearer ${token}` };
    expect((await post(increment.padEnd(BODY_LIMIT_BYTES, " "), auth)).status).toBe(202);
    const tooLarge = await post(increment.padEnd(BODY_LIMIT_BYTES + 1, " "), auth);
    expect(tooLarge.status).toBe(413);
    expect(tooLarge.headers.get("content-type")).toBe("application/problem+json");
    const problem = (await tooLarge.json()) as Partial<Problem>;
    expect(problem.code).toBe("payload_too_large");
    // The API's problems carry `instance`; nginx's do not, so this one never reached a node.
    expect(problem.instance).toBeUndefined();
  });

  it("spreads load over all three nodes, routes around one killed with kill -9, exactly once", {
    timeout: 60_000,
  }, async ({ annotate }) => {
    const { d, proxy } = running();
    const victim = apis[1];
    if (!victim) throw new Error("three API nodes expected");
    const victimAddress = new URL(victim.url).host;
    const nodes = apis.map((api) => new URL(api.url).host);
    const failTimeoutMs = failTimeoutOf(await composeServerParameters());
    const disabledLines = () =>
      proxy.errorLines.filter(
        (line) =>
          line.includes("upstream server temporarily disabled") &&
          line.includes(`upstream: "http://${victimAddress}/`),
      );

    const token = await d.token();
    const load = new Load({ targets: () => [proxy.url], token, concurrency: LOAD_CONCURRENCY });
    // Lighter, for the wait until nginx probes the dead node again: a rate, not a saturated machine.
    const probeLoad = new Load({ targets: () => [proxy.url], token, concurrency: 4, pauseMs: 10 });
    // Epoch milliseconds, to compare with the access log's $msec; the loads' own times are performance.now().
    let killedAt = 0;
    let disabledAt = 0;
    let disabledAtPerf = 0;
    try {
      load.start();
      await load.waitForAccepted(1_500);

      killedAt = Date.now();
      expect(await victim.stop("SIGKILL")).toBeNull();
      expect((await victim.exited).signal).toBe("SIGKILL");
      // max_fails refused or broken connections take it out, in all workers (the zone is shared).
      await waitFor(async () => disabledLines().length > 0, {
        timeoutMs: 5_000,
        message: "nginx never took the killed node out",
      });
      disabledAt = Date.now();
      disabledAtPerf = performance.now();
      // The other two carry on.
      await load.waitForAccepted(1_500);
      await load.stop();

      // fail_timeout later nginx lets one request try the node again. Its connection is refused, so it never
      // reached a node, and nginx passes it on (a POST too: nothing was sent) and takes the node out again.
      // (Each failure past max_fails logs the line again, so count from here.)
      const disabledBefore = disabledLines().length;
      probeLoad.start();
      await waitFor(async () => disabledLines().length > disabledBefore, {
        timeoutMs: failTimeoutMs + 5_000,
        message: "nginx never tried the killed node again after fail_timeout",
      });
    } finally {
      await Promise.all([load.stop(), probeLoad.stop()]);
    }
    await d.waitForDrain();
    const sent = [...load.sent, ...probeLoad.sent];
    const entries = (await proxy.stop()).filter(
      (entry) => entry.uri === "/increment" && !configRequestIds.has(entry.request_id),
    );

    // Exactly once: every 202 counted once; every 502 (nginx lost the node mid-request) once or not at all.
    expect(exactlyOnceViolations(sent, await d.counters())).toEqual([]);

    // The client only ever got an answer from nginx: a 202, or a 502 for a request the node had already
    // taken when it died (at most one per load worker: each has one request in flight). No connection was
    // reset on the client, and nothing failed once nginx had taken the node out.
    const failed = sent.filter((request) => request.outcome !== "accepted");
    expect(failed.filter((request) => request.status !== 502)).toEqual([]);
    expect(failed.length).toBeLessThanOrEqual(LOAD_CONCURRENCY);
    expect(failed.filter((request) => request.startedAt > disabledAtPerf)).toEqual([]);
    // nginx logged every request the loads sent, with the status the client got.
    expect(entries.length).toBe(sent.length);
    expect(entries.filter((entry) => entry.status === 202).length).toBe(
      sent.filter((request) => request.outcome === "accepted").length,
    );

    // Before the kill, every node answered a fair share (least_conn among equals is round robin).
    const beforeKill = entries.filter((entry) => entry.msec * 1_000 < killedAt && entry.status === 202);
    const perNode = nodes.map((node) => beforeKill.filter((entry) => finalUpstream(entry) === node).length);
    for (const answered of perNode) expect(answered).toBeGreaterThan(beforeKill.length / 6);
    // After it, requests that found the node's port closed were passed to another node and accepted: their
    // log lists the dead node, then the one that answered. (A 202 from the dead node itself may still be
    // logged just after the kill: it answered just before.)
    const afterKill = entries.filter((entry) => entry.msec * 1_000 >= killedAt);
    const passedOn = afterKill.filter((entry) => {
      const tried = upstreams(entry);
      return entry.status === 202 && tried.length > 1 && tried[0] === victimAddress;
    });
    expect(passedOn.length).toBeGreaterThan(0);
    expect(passedOn.filter((entry) => finalUpstream(entry) === victimAddress)).toEqual([]);
    const answeredAfterKill = nodes.map(
      (node) => afterKill.filter((entry) => entry.status === 202 && finalUpstream(entry) === node).length,
    );

    await annotate(
      [
        `202s per node before the kill: ${nodes.map((node, i) => `${node}=${perNode[i]}`).join(" ")}`,
        `logged after the kill of ${victimAddress}: ` +
          nodes.map((node, i) => `${node}=${answeredAfterKill[i]}`).join(" "),
        `taken out ${disabledAt - killedAt} ms after the kill`,
        `${failed.length} answered 502 (sent to it as it died)`,
        `${passedOn.length} refused and passed on: ${passedOn.map((entry) => `"${entry.upstream_addr}"`).join(" ")}`,
      ].join("; "),
    );
  });
});
