import { describe, expect, it } from "vitest";
import { ApiError } from "../../api/errors.ts";
import { createIncrementers } from "../../api/store/increment.ts";
import { Keyspace } from "../../lib/redis/keyspace.ts";
import { Scripts } from "../../lib/redis/scripts.ts";
import { usePrivateRedis } from "../support/redis.ts";

// The increment scripts on a Redis at maxmemory (noeviction): HINCRBY is refused for memory, which is the
// store failing (503 redis_full), not the increment's fault (422 counter_out_of_range), whichever script
// and path it comes through.

const store = usePrivateRedis();

async function codeOf(attempt: Promise<unknown>): Promise<string> {
  const error = await attempt.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  return error instanceof ApiError ? error.code : `no ApiError: ${String(error)}`;
}

describe("a full Redis", () => {
  it("refuses single and batched increments, with and without an Idempotency-Key, as redis_full", async () => {
    const { redis } = store;
    const keyspace = new Keyspace("full", 2);
    const { one, many } = createIncrementers(new Scripts(redis, keyspace), keyspace, {
      idempotencyTtlSeconds: 60,
      idempotencyMaxRecords: 1_000,
    });
    // Warm the scripts while there is room: the first call of each loads it into Redis' script cache.
    await one("warm", 1);
    await one("warm", 1, { clientId: "c", key: "warm" });
    await many([{ key: "warm", value: 1 }], { clientId: "c", key: "warm-batch" });
    const used = Number(/used_memory:(\d+)/.exec(await redis.info("memory"))?.[1]);
    await redis.config("SET", "maxmemory", String(used));
    await redis.set("filler", "x".repeat(100_000)).catch(() => {});

    const batch = [
      { key: "a", value: 1 },
      { key: "b", value: 2 },
    ];
    expect(await codeOf(one("k", 1))).toBe("redis_full");
    expect(await codeOf(one("k", 1, { clientId: "c", key: "k1" }))).toBe("redis_full");
    expect(await codeOf(many(batch))).toBe("redis_full");
    expect(await codeOf(many(batch, { clientId: "c", key: "b1" }))).toBe("redis_full");
  });
});
