import type { MiddlewareHandler } from "hono";
import { type Logger, lazyChild } from "../../../lib/logger.ts";
import type { AppEnv } from "../../context.ts";

/**
 * Sets `c.var.logger`: `logger` with the request id on every line, so a request's lines can be found from
 * the id its client got (X-Request-Id, the problem's `requestId`). Runs after hono's requestId(). The child
 * logger is only made when the request logs something, which few do.
 */
export function requestLogger(logger: Logger): MiddlewareHandler<AppEnv> {
  return async function bindRequestLogger(c, next) {
    c.set(
      "logger",
      lazyChild(logger, () => ({ requestId: c.get("requestId") })),
    );
    await next();
  };
}
