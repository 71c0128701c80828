import { Hono } from "hono";
import type { RedisClient } from "../../lib/redis/client.ts";
import type { AppEnv } from "../context.ts";
import { ApiError } from "../errors.ts";

export interface HealthRouteOptions {
  redis: RedisClient;
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
      return c.json({ status: "ready" });
    });
}
