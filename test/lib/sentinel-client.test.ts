import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closeRedis, connectRedis, createRedis } from "../../lib/redis/client.ts";
import { type RedisSentinelDeployment, startRedisSentinel } from "../../tools/servers/redis-sentinel.ts";
import { waitFor } from "../harness/fixtures.ts";

// A Sentinel that stops answering must not hold up the client, and ioredis ends a Sentinel client for good
// when a failover is announced while the client asks where the master is. A process whose client ended never
// reaches Redis again.

let redis: RedisSentinelDeployment;

beforeAll(async () => {
  // Three Sentinels, so that two can still agree on a failover while the first one is paused.
  redis = await startRedisSentinel({ replicas: 1, sentinels: 3, downAfterMs: 1_000 });
}, 60_000);
afterAll(() => redis?.destroy());

describe("a Sentinel client", () => {
  it("follows a failover announced while it waits on a Sentinel that does not answer", {
    timeout: 60_000,
  }, async () => {
    const client = createRedis({
      sentinels: redis.sentinels.map((address) => {
        const [host, port] = address.split(":");
        return { host: host ?? "127.0.0.1", port: Number(port) };
      }),
      sentinelMaster: redis.masterName,
      url: "",
      name: "sentinel-client-test",
      commandTimeoutMs: 1_000,
    });
    client.on("error", () => {});
    try {
      await connectRedis(client);
      const [askedFirst, announcer] = redis.sentinels;
      if (askedFirst === undefined || announcer === undefined) throw new Error("too few Sentinels");
      const master = await redis.master();
      // The client asks the paused Sentinel first and waits for its answer while the other two promote the
      // replica and announce it.
      redis.signal(askedFirst, "SIGSTOP");
      await redis.kill(master);
      await waitFor(
        async () => {
          const named = await redis.command(
            announcer,
            "SENTINEL",
            "GET-MASTER-ADDR-BY-NAME",
            redis.masterName,
          );
          return Array.isArray(named) && named.join(":") !== master;
        },
        { timeoutMs: 30_000, message: "the Sentinels did not fail over" },
      );
      const reachesTheNewMaster = () =>
        waitFor(async () => (await client.set("sentinel-client-test", "1")) === "OK", {
          timeoutMs: 20_000,
          message: () => `the client did not reach the new master (status ${client.status})`,
        });
      await reachesTheNewMaster();
      // The client may still be waiting on the paused Sentinel when it resumes, with a stale answer.
      redis.signal(askedFirst, "SIGCONT");
      await sleep(1_000);
      await reachesTheNewMaster();
      expect(client.status).toBe("ready");
    } finally {
      await closeRedis(client);
    }
  });
});
