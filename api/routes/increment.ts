import { Hono } from "hono";
import { readJsonBody } from "../body.ts";
import type { AppEnv } from "../context.ts";
import { incrementBodySchema } from "../schemas.ts";
import type { Incrementer } from "../store/increment.ts";
import { parseOrThrow } from "../validation.ts";

export interface IncrementRouteOptions {
  increment: Incrementer;
  maxKeyLength: number;
  bodyLimitBytes: number;
}

export function incrementRoute(options: IncrementRouteOptions) {
  const bodySchema = incrementBodySchema(options.maxKeyLength);
  return new Hono<AppEnv>().post("/increment", async (c) => {
    const body = parseOrThrow(
      bodySchema,
      await readJsonBody(c.req.raw, options.bodyLimitBytes),
      "invalid_body",
    );
    await options.increment(body.key, body.value);
    // Sent only now: Redis has acknowledged the write.
    return c.body(null, 202);
  });
}
