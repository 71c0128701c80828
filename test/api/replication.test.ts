import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RedisServer, startRedis } from "../../tools/servers/redis.ts";
import { waitFor } from "../harness/fixtures.ts";
import { createTestApi, readProblem, type TestApi } from "../support/api.ts";
import { parseMetrics, sampleValue } from "../support/metrics.ts";

// The API on a master with one replica: what a client is told when the replica cannot confirm a write.

let master: RedisServer;
let replica: RedisServer;

async function startReplica(): Promise<RedisServer> {
  const server = await startRedis({
    appendOnly: false,
    args: ["--replicaof", "127.0.0.1", String(master.port)],
  });
  return server;
}

async function online(api: TestApi): Promise<void> {
  await waitFor(async () => /state=online/.test(await api.node.redis.info("replication")), {
    message: "the replica never came online",
  });
}

beforeAll(async () => {
  // Fenced as operations.md asks: without a good replica the master refuses writes.
  master = await startRedis({
    appendOnly: false,
    args: ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"],
  });
  replica = await startReplica();
});
afterAll(async () => {
  await Promise.all([master?.destroy(), replica?.destroy()]);
});

describe("POST /increment on a master with a replica", () => {
  it("answers 202 once the replica holds the increment, and 503 replication_unconfirmed while it is paused", async () => {
    const api = await createTestApi({ REDIS_URL: master.url, REDIS_WAIT_TIMEOUT_MS: "200" });
    try {
      await online(api);
      await api.node.replicas.check();
      const token = await api.token();
      expect((await api.increment({ key: "held", value: 1 }, token)).status).toBe(202);

      replica.signal("SIGSTOP");
      let response: Response;
      try {
        response = await api.increment({ key: "unheld", value: 1 }, token, { "idempotency-key": "retry-me" });
      } finally {
        replica.signal("SIGCONT");
      }
      expect(response.status).toBe(503);
      expect(response.headers.get("retry-after")).toBe("1");
      const problem = await readProblem(response);
      expect(problem.code).toBe("replication_unconfirmed");
      expect(problem.detail).toMatch(/may or may not count\. Retry with the same Idempotency-Key/);

      // The retry the answer asks for: applied once, now confirmed.
      const retry = await api.increment({ key: "unheld", value: 1 }, token, {
        "idempotency-key": "retry-me",
      });
      expect(retry.status).toBe(202);
      expect(retry.headers.get("idempotent-replayed")).toBe("true");
      expect(await api.node.redis.hget(`{${api.prefix}:0}:dirty`, "unheld")).toBe("1");

      const metrics = parseMetrics(await api.node.metrics.registry.metrics());
      expect(sampleValue(metrics, "tally_redis_errors_total", { kind: "unconfirmed" })).toBe(1);
    } finally {
      await api.close();
    }
  });

  it("answers 503 redis_unavailable, not applied, when the master refuses writes without its replica", async () => {
    const api = await createTestApi({ REDIS_URL: master.url, REDIS_WAIT_TIMEOUT_MS: "200" });
    try {
      await online(api);
      const token = await api.token();
      await replica.kill();
      await waitFor(async () => /min_slaves_good_slaves:0/.test(await api.node.redis.info("replication")), {
        message: "the master still counts its replica as good",
      });

      const response = await api.increment({ key: "refused", value: 1 }, token);

      expect(response.status).toBe(503);
      const problem = await readProblem(response);
      expect(problem.code).toBe("redis_unavailable");
      expect(problem.detail).toContain("min-replicas-to-write");
      expect(problem.detail).toContain("was not applied");
      expect(await api.node.redis.hget(`{${api.prefix}:0}:dirty`, "refused")).toBeNull();
      const metrics = parseMetrics(await api.node.metrics.registry.metrics());
      expect(sampleValue(metrics, "tally_redis_errors_total", { kind: "noreplicas" })).toBe(1);
    } finally {
      await api.close();
      replica = await startReplica();
    }
  });
});
