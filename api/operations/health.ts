import * as v from "valibot";
import type { RedisClient } from "../../lib/redis/client.ts";
import type { RedisMemoryProblem, RedisMemoryWatch } from "../../lib/redis/memory-watch.ts";
import { ApiError } from "../errors.ts";
import { jsonSchemaOf } from "../openapi/json-schema.ts";
import type { Operation } from "../operation.ts";
import { respondJson } from "../respond.ts";
import { FULL_RETRY_AFTER_S } from "../store-problems.ts";

// An unsafe eviction policy lasts until an operator acts: no time to suggest.
const RETRY_AFTER_S: Partial<Record<RedisMemoryProblem["code"], number>> = {
  redis_unavailable: 1,
  redis_full: FULL_RETRY_AFTER_S,
};

export interface HealthOptions {
  /** Every connection the node serves with: it is ready when each of them answers. */
  redis: readonly RedisClient[];
  /** Not ready while Redis is full or may evict accepted increments. */
  redisMemory: Pick<RedisMemoryWatch, "problem" | "noteOutOfMemory">;
  /** True once shutdown began: the node reports not ready so the load balancer drains it. */
  isDraining: () => boolean;
}

const statusBody = (status: string) => jsonSchemaOf(v.object({ status: v.literal(status) }));

/** GET /healthz: the process is alive. */
export function livenessOperation(): Operation {
  return {
    id: "liveness",
    method: "GET",
    path: "/healthz",
    problems: [],
    handler: (c) => respondJson(c, 200, { status: "ok" }),
    doc: {
      summary: "The process is alive",
      parameters: [],
      responses: {
        "200": { description: "Alive.", content: { "application/json": { schema: statusBody("ok") } } },
      },
    },
  };
}

/** GET /readyz: the node can serve, for a load balancer's health check. */
export function readinessOperation(options: HealthOptions): Operation {
  return {
    id: "readiness",
    method: "GET",
    path: "/readyz",
    problems: ["shutting_down", "redis_unavailable", "redis_full", "redis_eviction_policy", "internal_error"],
    async handler(c) {
      if (options.isDraining()) throw new ApiError("shutting_down", "this node is draining");
      try {
        await Promise.all(options.redis.map((client) => client.ping()));
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
      return respondJson(c, 200, { status: "ready" });
    },
    doc: {
      summary: "The node can serve: Redis answers PING",
      description:
        "503 while Redis is unreachable and once shutdown has begun (with SHUTDOWN_DRAIN_DELAY_MS the node keeps serving that long, so a load balancer sees it leave before it stops listening).",
      parameters: [],
      responses: {
        "200": { description: "Ready.", content: { "application/json": { schema: statusBody("ready") } } },
      },
    },
  };
}
