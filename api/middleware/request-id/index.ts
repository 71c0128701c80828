import { randomUUID } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import { type Logger, lazyChild } from "../../../lib/logger.ts";
import type { AppEnv } from "../../context.ts";
import { requestHeader } from "../../request-headers.ts";
import { carryResponseHeaders, setResponseHeader } from "../../respond.ts";

const MAX_LENGTH = 255;
// What a proxy's id looks like (a UUID, a hex or base64 token); anything else could forge log lines.
const USABLE = /^[\w\-=]+$/;

/**
 * Gives every request an id and finds its log lines by it: the id a proxy sent in X-Request-Id when it is
 * usable, else a new UUID; sent back as X-Request-Id and in every problem (`requestId`), and bound to
 * `c.var.logger`. The child logger is only made when the request logs something, which few do.
 */
export function requestId(logger: Logger): MiddlewareHandler<AppEnv> {
  return async function identifyRequest(c, next) {
    const sent = requestHeader(c, "x-request-id");
    const id = sent !== undefined && sent.length <= MAX_LENGTH && USABLE.test(sent) ? sent : randomUUID();
    c.set("requestId", id);
    c.set(
      "logger",
      lazyChild(logger, () => ({ requestId: id })),
    );
    setResponseHeader(c, "X-Request-Id", id);
    await next();
    carryResponseHeaders(c);
  };
}
