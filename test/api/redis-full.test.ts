import { describe, expect, it } from "vitest";
import { createIncrementStore } from "../../api/store/increments.ts";
import { createCounterResetter, type ResetOutcome } from "../../api/store/resets.ts";
import type { WriteOutcome } from "../../api/store/write-outcome.ts";
import { writeProblem } from "../../api/store-problems.ts";
import { Keyspace } from "../../lib/redis/keyspace.ts";
import { Scripts } from "../../lib/redis/scripts.ts";
import { usePrivateRedis } from "../support/redis.ts";

// The increment scripts on a Redis at maxmemory (noeviction): HINCRBY is refused for memory, which is the
// store failing (503 redis_full), not the increment's fault (422 counter_out_of_range), whichever script
// and path it comes through.

const store = usePrivateRedis();

/** How the outcome of a write is answered: its problem's code. */
async function codeOf(
  attempt: Promise<WriteOutcome | ResetOutcome>,
  endpoint: "increment" | "increments" | "reset",
): Promise<string> {
  const outcome = await attempt;
  return outcome.kind === "applied" || outcome.kind === "replayed" || outcome.kind === "resharding"
    ? outcome.kind
    : `${writeProblem(outcome, endpoint).code} (${outcome.kind === "failed" ? outcome.failure : outcome.kind})`;
}

describe("a full Redis", () => {
  it("refuses single and batched increments and resets, with and without an Idempotency-Key, as redis_full", async () => {
    const { redis } = store;
    const keyspace = new Keyspace("full", 2);
    const limits = { idempotencyTtlSeconds: 60, idempotencyMaxRecords: 1_000 };
    const increment = createIncrementStore(new Scripts(redis, keyspace), keyspace, limits);
    const reset = createCounterResetter(new Scripts(redis, keyspace), keyspace, limits);
    type Idempotency = { clientId: string; key: string };
    const one = (key: string, value: number, idempotency?: Idempotency) =>
      increment({ increments: [{ key, value }], idempotency, endpoint: "increment" });
    const many = (increments: { key: string; value: number }[], idempotency?: Idempotency) =>
      increment({ increments, idempotency, endpoint: "increments" });
    // Warm the scripts while there is room: the first call of each loads it into Redis' script cache.
    await one("warm", 1);
    await one("warm", 1, { clientId: "c", key: "warm" });
    await many([{ key: "warm", value: 1 }], { clientId: "c", key: "warm-batch" });
    await reset({ key: "warm" });
    await reset({ key: "warm", idempotency: { clientId: "c", key: "warm-reset" } });
    const used = Number(/used_memory:(\d+)/.exec(await redis.info("memory"))?.[1]);
    await redis.config("SET", "maxmemory", String(used));
    await redis.set("filler", "x".repeat(100_000)).catch(() => {});

    const batch = [
      { key: "a", value: 1 },
      { key: "b", value: 2 },
    ];
    expect(await codeOf(one("k", 1), "increment")).toBe("redis_full (oom)");
    expect(await codeOf(one("k", 1, { clientId: "c", key: "k1" }), "increment")).toBe("redis_full (oom)");
    expect(await codeOf(many(batch), "increments")).toBe("redis_full (oom)");
    expect(await codeOf(many(batch, { clientId: "c", key: "b1" }), "increments")).toBe("redis_full (oom)");
    expect(await codeOf(reset({ key: "k" }), "reset")).toBe("redis_full (oom)");
    expect(await codeOf(reset({ key: "k", idempotency: { clientId: "c", key: "r1" } }), "reset")).toBe(
      "redis_full (oom)",
    );
  });
});
