import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createIncrementStore } from "../../api/store/increments.ts";
import { writeProblem } from "../../api/store-problems.ts";
import { allShardKeys, Keyspace, shardKeys, shardOfKey } from "../../lib/redis/keyspace.ts";
import { Scripts } from "../../lib/redis/scripts.ts";
import { waitFor } from "../harness/fixtures.ts";
import { createTestApi, readProblem, type TestApi } from "../support/api.ts";
import { usePrivateRedis } from "../support/redis.ts";

// Idempotency-Key: a retry of the same request by the same client within the TTL is applied once.

let api: TestApi;
beforeAll(async () => {
  api = await createTestApi({ SYNC_SHARDS: "4" });
});
afterAll(() => api.close());

/** The key's total over every shard's dirty hash. */
async function pendingIn(target: TestApi, shards: number, key: string): Promise<number> {
  const values = await Promise.all(
    allShardKeys(target.prefix, shards).map((keys) => target.node.redis.hget(keys.dirty, key)),
  );
  return values.reduce((sum, value) => sum + Number(value ?? 0), 0);
}

const pending = (target: TestApi, key: string) => pendingIn(target, 4, key);

/** A counter key other than `not` in shard `shard` of 4. */
function otherKeyIn(shard: number, not: string): string {
  for (let i = 0; ; i++) {
    const key = `other-${i}`;
    if (key !== not && shardOfKey(key, 4) === shard) return key;
  }
}

describe("Idempotency-Key", () => {
  it("applies a retried request once and marks the replay", async () => {
    const token = await api.token();
    const first = await api.increment({ key: "once", value: 5 }, token, { "idempotency-key": "req-1" });
    expect(first.status).toBe(202);
    expect(first.headers.get("idempotent-replayed")).toBeNull();
    for (let i = 0; i < 5; i++) {
      const retry = await api.increment({ key: "once", value: 5 }, token, { "idempotency-key": "req-1" });
      expect(retry.status).toBe(202);
      expect(retry.headers.get("idempotent-replayed")).toBe("true");
    }
    expect(await pending(api, "once")).toBe(5);
  });

  it("answers 422 for the same key with a different body, and stores nothing", async () => {
    const token = await api.token();
    expect((await api.increment({ key: "k", value: 1 }, token, { "idempotency-key": "req-2" })).status).toBe(
      202,
    );
    const reused = await api.increment({ key: "k", value: 2 }, token, { "idempotency-key": "req-2" });
    expect(reused.status).toBe(422);
    expect((await readProblem(reused)).code).toBe("idempotency_key_reused");
    // The record lives in the counter key's shard: another key in that shard meets it and is refused.
    const sameShard = otherKeyIn(shardOfKey("k", 4), "k");
    const otherKey = await api.increment({ key: sameShard, value: 1 }, token, { "idempotency-key": "req-2" });
    expect(otherKey.status).toBe(422);
    expect(await pending(api, "k")).toBe(1);
    expect(await pending(api, sameShard)).toBe(0);
  });

  it("does not see a key reused for a counter in another shard: that request is a new one", async () => {
    const token = await api.token();
    expect((await api.increment({ key: "k", value: 1 }, token, { "idempotency-key": "req-3" })).status).toBe(
      202,
    );
    const elsewhere = otherKeyIn((shardOfKey("k", 4) + 1) % 4, "k");
    const response = await api.increment({ key: elsewhere, value: 1 }, token, { "idempotency-key": "req-3" });
    expect(response.status).toBe(202);
    expect(response.headers.get("idempotent-replayed")).toBeNull();
    expect(await pending(api, elsewhere)).toBe(1);
  });

  it("keeps keys per client: two clients may use the same Idempotency-Key", async () => {
    const alice = await api.token({ subject: "idem-alice" });
    const bob = await api.token({ subject: "idem-bob" });
    expect(
      (await api.increment({ key: "shared", value: 1 }, alice, { "idempotency-key": "same" })).status,
    ).toBe(202);
    const fromBob = await api.increment({ key: "shared", value: 1 }, bob, { "idempotency-key": "same" });
    expect(fromBob.headers.get("idempotent-replayed")).toBeNull();
    expect(await pending(api, "shared")).toBe(2);
  });

  it("keeps shards key-disjoint: the increment and its record go to the counter key's shard", async () => {
    const token = await api.token({ subject: "disjoint" });
    const keys = Array.from({ length: 12 }, (_, i) => `disjoint-${i}`);
    for (const [i, key] of keys.entries()) {
      const response = await api.increment({ key, value: 1 }, token, { "idempotency-key": `disjoint-${i}` });
      expect(response.status).toBe(202);
    }
    const shards = allShardKeys(api.prefix, 4);
    for (const [i, key] of keys.entries()) {
      const shard = shardOfKey(key, 4);
      const holding = await Promise.all(shards.map((keys) => api.node.redis.hexists(keys.dirty, key)));
      expect(holding.map((held, index) => (held === 1 ? index : -1)).filter((index) => index >= 0)).toEqual([
        shard,
      ]);
      const record = new Keyspace(api.prefix, 4).idempotencyRecord(
        shardKeys(api.prefix, shard),
        "disjoint",
        `disjoint-${i}`,
      );
      expect(await api.node.redis.exists(record.key)).toBe(1);
    }
  });

  it("remembers a key for the configured time (24 h by default)", async () => {
    const token = await api.token({ subject: "ttl-client" });
    await api.increment({ key: "ttl", value: 1 }, token, { "idempotency-key": "ttl-1" });
    const records = (
      await Promise.all([0, 1, 2, 3].map((shard) => api.node.redis.keys(`{${api.prefix}:${shard}}:idem:*`)))
    ).flat();
    const ttls = await Promise.all(records.map((record) => api.node.redis.ttl(record)));
    expect(ttls.length).toBeGreaterThan(0);
    for (const ttl of ttls) expect(ttl).toBeGreaterThan(86_400 - 60);
  });

  it.each([
    ["empty", ""],
    ["too long", "k".repeat(256)],
    ["non-ASCII", "café"],
    ["control character", "a\tb"],
  ])("rejects an Idempotency-Key that is %s with 400", async (_name, header) => {
    const token = await api.token();
    const response = await api.increment({ key: "bad-header", value: 1 }, token, {
      "idempotency-key": header,
    });
    expect(response.status).toBe(400);
    expect(await readProblem(response)).toMatchObject({
      code: "invalid_idempotency_key",
      detail: "Idempotency-Key must be 1 to 255 printable ASCII characters",
    });
    expect(await pending(api, "bad-header")).toBe(0);
  });
});

describe("IDEMPOTENCY_MAX_RECORDS", () => {
  let bounded: TestApi;
  beforeAll(async () => {
    bounded = await createTestApi({ SYNC_SHARDS: "2", IDEMPOTENCY_MAX_RECORDS: "4", IDEMPOTENCY_TTL_S: "2" });
  });
  afterAll(() => bounded.close());

  it("past the bound answers 503 idempotency_capacity and counts nothing; replays still answer; expired records make room", async () => {
    const token = await bounded.token({ subject: "bounded" });
    // Two shards of two records each: send keys until one lands in a full shard.
    const accepted: string[] = [];
    let refused: Response | undefined;
    for (let i = 0; i < 50 && refused === undefined; i++) {
      const response = await bounded.increment({ key: `bounded-${i}`, value: 1 }, token, {
        "idempotency-key": `bound-${i}`,
      });
      if (response.status === 202) accepted.push(`bound-${i}`);
      else refused = response;
    }
    if (refused === undefined) throw new Error("the bound never refused a record");
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("5");
    const problem = await readProblem(refused);
    expect(problem.code).toBe("idempotency_capacity");
    expect(problem.detail).toContain("IDEMPOTENCY_MAX_RECORDS");
    expect(accepted.length).toBeGreaterThanOrEqual(2);
    expect(accepted.length).toBeLessThanOrEqual(4);
    const refusedKey = `bounded-${accepted.length}`;
    expect(await pendingIn(bounded, 2, refusedKey)).toBe(0);

    // A retry of a recorded request is still recognised, not refused.
    const firstKey = accepted[0] as string;
    const replay = await bounded.increment({ key: "bounded-0", value: 1 }, token, {
      "idempotency-key": firstKey,
    });
    expect(replay.status).toBe(202);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");

    // The records expire (TTL 2 s): the index drops them when it is full, and the refused request fits.
    await sleep(2_100);
    const retried = await bounded.increment({ key: refusedKey, value: 1 }, token, {
      "idempotency-key": `bound-${accepted.length}`,
    });
    expect(retried.status).toBe(202);
    expect(await pendingIn(bounded, 2, refusedKey)).toBe(1);
  });
});

describe("a retry after a timeout that Redis applied anyway", () => {
  const store = usePrivateRedis({
    appendOnly: true,
    serverArgs: ["--enable-debug-command", "yes"],
    commandTimeoutMs: 200,
  });

  // Through the HTTP API the rate limiter's own Redis call would time out first; the store is where the
  // increment itself can time out after being sent, so that is where this is tested.
  it("is counted once", async () => {
    const { redis, server: redisServer } = store;
    const keyspace = new Keyspace("retry", 1);
    const incrementStore = createIncrementStore(new Scripts(redis, keyspace), keyspace, {
      idempotencyTtlSeconds: 60,
      idempotencyMaxRecords: 1_000,
    });
    const increment = (key: string, value: number, idempotency: { clientId: string; key: string }) =>
      incrementStore({ increments: [{ key, value }], idempotency, endpoint: "increment" });
    const client = { clientId: "c", key: "retry-me" };
    // Load the script first: after a NOSCRIPT reply ioredis resends a script only while the command is
    // live, and the point here is a command Redis holds and then runs.
    await increment("warm-up", 1, { clientId: "c", key: "warm-up" });

    const blocker = new Redis(redisServer.url);
    try {
      const stall = blocker.call("DEBUG", "SLEEP", "1");
      await new Promise((resolve) => setTimeout(resolve, 50));
      const first = await increment("timed-out", 7, client);
      expect(first).toMatchObject({ kind: "failed", failure: "timeout" });
      if (first.kind !== "failed") throw new Error("the first attempt should have timed out");
      // Answered as what it is: an outcome the client cannot know, to retry with its key.
      expect(writeProblem(first, "increment")).toMatchObject({
        code: "redis_unavailable",
        message: expect.stringContaining("may or may not have been applied"),
      });
      await stall;
    } finally {
      blocker.disconnect();
    }
    const dirty = shardKeys("retry", 0).dirty;
    await waitFor(async () => (await redis.hget(dirty, "timed-out")) === "7", {
      message: "the timed-out increment never reached Redis",
    });

    // The client retries, as it should after a 503: the first attempt was applied, so this is a replay.
    expect(await increment("timed-out", 7, client)).toEqual({ kind: "replayed" });
    expect(await redis.hget(dirty, "timed-out")).toBe("7");
  });
});
