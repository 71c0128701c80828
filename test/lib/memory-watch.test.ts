import { describe, expect, it } from "vitest";
import { RedisMemoryWatch } from "../../lib/redis/memory-watch.ts";
import { captureLogger } from "../support/logger.ts";
import { usePrivateRedis } from "../support/redis.ts";

// The watch against a real Redis whose maxmemory the test moves around its use: a Redis that hovers at its
// limit refuses one write and takes the next, and readiness must not flap with it.

const store = usePrivateRedis();

async function usedBytes(): Promise<number> {
  return Number(/used_memory:(\d+)/.exec(await store.redis.info("memory"))?.[1]);
}

/** Sets maxmemory so that what Redis uses now is `share` of it. */
async function limitTo(share: number): Promise<void> {
  await store.redis.config("SET", "maxmemory", String(Math.round((await usedBytes()) / share)));
}

function watch() {
  const { logger, lines } = captureLogger();
  const memory = new RedisMemoryWatch({
    redis: store.redis,
    logger,
    intervalMs: 60_000,
    allowEviction: false,
    onUnsafeAtStart: (message) => {
      throw new Error(message);
    },
  });
  return { memory, lines };
}

describe("RedisMemoryWatch", () => {
  it("is full from a refused write until a reading shows clear room, not at the first reading under the limit", async () => {
    await store.redis.config("SET", "maxmemory-policy", "noeviction");
    await limitTo(0.5);
    const { memory, lines } = watch();
    await memory.check();
    expect(memory.problem()).toBeUndefined();

    memory.noteOutOfMemory();
    expect(memory.problem()).toMatchObject({ code: "redis_full" });

    // Just under the limit: the next write may be refused again.
    await limitTo(0.99);
    await memory.check();
    expect(memory.problem()).toMatchObject({ code: "redis_full" });

    await limitTo(0.5);
    await memory.check();
    expect(memory.problem()).toBeUndefined();
    expect(lines.map((line) => line.msg)).toEqual([
      "Redis is out of memory: new writes are refused (503 redis_full) until the syncer frees it",
      "Redis has room again",
    ]);
  });

  it("is full at a reading at the limit and stays full while memory hovers just under it", async () => {
    await store.redis.config("SET", "maxmemory-policy", "noeviction");
    const { memory } = watch();
    await limitTo(1);
    await memory.check();
    expect(memory.problem()).toMatchObject({ code: "redis_full" });
    await limitTo(0.98);
    await memory.check();
    expect(memory.problem()).toMatchObject({ code: "redis_full" });
    await store.redis.config("SET", "maxmemory", "0");
    await memory.check();
    expect(memory.problem()).toBeUndefined();
  });

  it("is not full near the limit when nothing was refused", async () => {
    await store.redis.config("SET", "maxmemory-policy", "noeviction");
    const { memory } = watch();
    await limitTo(0.98);
    await memory.check();
    expect(memory.problem()).toBeUndefined();
  });
});
