import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { exactlyOnceViolations, Load } from "../../tools/load/accounted.ts";
import { type RedisServer, startRedis } from "../../tools/servers/redis.ts";
import { Deployment } from "../support/deployment.ts";

// Redis, the primary counter, taken down under load and brought back on the same data dir, in real
// processes. While it is down the API must refuse (503), never acknowledge; afterwards every process must
// recover by itself, and every acknowledged increment must reach Postgres exactly once (AOF).

const OUTAGE_MS = 3_000;

let deployment: Deployment | undefined;
let redis: RedisServer | undefined;
afterEach(async () => {
  await deployment?.close();
  deployment = undefined;
  await redis?.destroy();
  redis = undefined;
});

const VARIANTS = [
  {
    // SHUTDOWN flushes and fsyncs the AOF, so even everysec loses nothing acknowledged.
    how: "clean shutdown (appendfsync everysec)",
    args: [],
    takeDown: (server: RedisServer) => server.stop(),
  },
  {
    // With everysec a kill -9 may lose up to ~2 s of acknowledged writes (docs/operations.md); with always, nothing.
    how: "kill -9 (appendfsync always)",
    args: ["--appendfsync", "always"],
    takeDown: (server: RedisServer) => server.kill(),
  },
];

describe("Redis down and back under load", () => {
  it.each(VARIANTS)(
    "$how: 503 and never 202 while down, recovery without restarts, nothing acknowledged lost",
    { timeout: 60_000 },
    async ({ args, takeDown }) => {
      const server = await startRedis({ args });
      redis = server;
      const d = await Deployment.create({ redisUrl: server.url });
      deployment = d;
      const api = await d.startApi();
      const syncer = await d.startSyncer();
      // The pause keeps the workers from spinning on instant 503s while Redis is down.
      const load = new Load({
        targets: () => [api.url],
        token: await d.token(),
        concurrency: 6,
        pauseMs: 5,
        resetKeys: 2,
      });
      load.start();
      await load.waitForAccepted(300);

      await takeDown(server);
      // Taken once the server has exited: a request sent after this cannot have been taken by Redis.
      const downAt = performance.now();
      await sleep(OUTAGE_MS);
      // Taken before the restart begins: a request answered before this was answered while Redis was down.
      const upAt = performance.now();
      await server.start();
      // Recovery by itself: nothing is restarted, the load just starts getting 202s again.
      await load.waitForAccepted(300);
      await load.stop();
      await d.waitForDrain();

      const whileDown = load.sent.filter((r) => r.startedAt >= downAt && r.endedAt <= upAt);
      expect(whileDown.filter((r) => r.status === 503).length).toBeGreaterThan(0);
      expect(whileDown.filter((r) => r.outcome === "accepted")).toEqual([]);
      // Every one of them a 503 from the live API (an unknown outcome for the client), not a 4xx or a
      // dropped connection.
      expect(whileDown.filter((r) => r.outcome !== "unknown" || r.status !== 503)).toEqual([]);
      expect(load.sent.filter((r) => r.startedAt > upAt && r.outcome === "accepted").length).toBeGreaterThan(
        0,
      );
      for (const process of [api, syncer]) {
        expect(process.child.exitCode).toBeNull();
        expect(process.child.signalCode).toBeNull();
      }
      expect(d.processes).toHaveLength(2);
      // Each process said Redis was gone once (a 3 s outage is within one reminder period), where it looked
      // for it, and that it was back: not a line and a stack per reconnect attempt.
      for (const process of [api, syncer]) {
        const lines = process.logs.filter((line) =>
          String(line.msg).startsWith("cannot reach Redis at REDIS_URL="),
        );
        expect(lines.map((line) => line.level)).toEqual(["warn", "info"]);
        expect(String(lines[1]?.msg)).toMatch(/: recovered$/);
        expect(process.logs.filter((line) => line.err !== undefined)).toEqual([]);
      }

      expect(exactlyOnceViolations(load.sent, await d.counters())).toEqual([]);
      expect(load.count("rejected")).toBe(0);
    },
  );
});
