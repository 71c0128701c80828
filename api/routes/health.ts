import { Hono } from "hono";
import type { RedisClient } from "../../lib/redis/client.ts";
import type { RedisMemoryProblem, RedisMemoryWatch } from "../../lib/redis/memory-watch.ts";
import type { AppEnv } from "../context.ts";
import { ApiError } from "../errors.ts";
import { FULL_RETRY_AFTER_S } from "../store/redis-errors.ts";

// An unsafe eviction policy lasts until an operator acts: no time to suggest.
const RETRY_AFTER_S: Partial<Record<RedisMemoryProblem["code"], number>> = {
  redis_unavailable: 1,
  redis_full: FULL_RETRY_AFTER_S,
};

export interface HealthRouteOptions {
  redis: RedisClient;
  /** Not ready while Redis is full or may evict accepted increments. */
  redisMemory: Pick<RedisMemoryWatch, "problem" | "noteOutOfMemory">;
  /** True once shutdown began: the node reports not ready so the load balancer drains it. */
  isDraining: () => boolean;
}

export function healthRoutes(options: HealthRouteOptions) {
  return new Hono<AppEnv>()
    .get("/healthz", (c) => c.json({ status: "ok" }))
    .get("/readyz", async (c) => {
      if (options.isDraining()) throw new ApiError("shutting_down", "this node is draining");
      try {
        await options.redis.ping();
      } catch (error) {
        throw new ApiError("redis_unavailable", "Redis does not answer", {
          headers: { "Retry-After": "1" },
          cause: error,
        });
      }
      const memory = options.redisMemory.problem();
      if (memory) {
        const retryAfter = RETRY_AFTER_S[memory.code];
        throw new ApiError(memory.code, memory.detail, {
          headers: retryAfter === undefined ? {} : { "Retry-After": String(retryAfter) },
        });
      }
      return c.json({ status: "ready" });
    });
}
