import { Hono } from "hono";
import { readJsonBody } from "../body.ts";
import type { AppEnv } from "../context.ts";
import { idempotencyKeySchema, incrementBodySchema } from "../schemas.ts";
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
    const header = c.req.header("idempotency-key");
    const idempotency =
      header === undefined
        ? undefined
        : {
            clientId: c.get("client").id,
            key: parseOrThrow(idempotencyKeySchema, header, "invalid_idempotency_key"),
          };
    const outcome = await options.increment(body.key, body.value, idempotency);
    // Sent only now: Redis has acknowledged the write (or had already applied this very request).
    if (outcome === "replayed") c.header("Idempotent-Replayed", "true");
    return c.body(null, 202);
  });
}
