import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { shardKeys } from "../../lib/redis/keyspace.ts";
import { type RedisServer, startRedis } from "../../tools/servers/redis.ts";
import { waitFor } from "../harness/fixtures.ts";
import { createTestApi, readProblem, type TestApi } from "../support/api.ts";

let redisServer: RedisServer;
let api: TestApi;
let token: string;
beforeAll(async () => {
  // appendfsync always: with everysec, Redis may postpone the AOF write while a background fsync runs
  // and a kill -9 can then lose an acknowledged write (seen here right after start-up). This test is
  // about the API's behaviour, so it takes the setting under which an acknowledged write survives a kill.
  redisServer = await startRedis({ args: ["--enable-debug-command", "yes", "--appendfsync", "always"] });
  api = await createTestApi({ REDIS_URL: redisServer.url, REDIS_COMMAND_TIMEOUT_MS: "300" });
  token = await api.token();
});
afterAll(async () => {
  await api.close();
  await redisServer.destroy();
});

const increment = () => api.increment({ key: "outage", value: 1 }, token);

describe("Redis unavailable", () => {
  it("answers 503 with Retry-After while Redis is down, never 202, then recovers by itself", async () => {
    expect((await increment()).status).toBe(202);
    await redisServer.kill();

    const during = await Promise.all(Array.from({ length: 20 }, increment));
    for (const response of during) {
      expect(response.status).toBe(503);
      expect(response.headers.get("retry-after")).toBe("1");
      expect((await readProblem(response)).code).toBe("redis_unavailable");
    }
    expect((await api.node.app.request("/readyz")).status).toBe(503);

    await redisServer.start();
    await waitFor(async () => (await increment()).status === 202, { message: "API did not recover" });
    expect((await api.node.app.request("/readyz")).status).toBe(200);

    // Exactly the 202s are in Redis: the first write survived the kill (AOF), none of the 503s landed,
    // and the recovery probe's 202 landed (possibly after some of its own 503s).
    const verify = new Redis(redisServer.url);
    try {
      const stored = Number(await verify.hget(shardKeys(api.prefix, 0).dirty, "outage"));
      expect(stored).toBe(2);
    } finally {
      verify.disconnect();
    }
  });

  it("fails fast with 503 when Redis is too slow to answer within the command timeout", async () => {
    const blocker = new Redis(redisServer.url);
    try {
      const blocked = blocker.call("DEBUG", "SLEEP", "2");
      await new Promise((resolve) => setTimeout(resolve, 50));
      const response = await increment();
      expect(response.status).toBe(503);
      await blocked;
    } finally {
      blocker.disconnect();
    }
    await waitFor(async () => (await increment()).status === 202, { message: "API did not recover" });
  });
});
