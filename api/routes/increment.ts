import { Hono } from "hono";
import type { AppEnv } from "../context.ts";
import { ApiError } from "../errors.ts";
import { incrementBodySchema } from "../schemas.ts";
import type { Incrementer } from "../store/increment.ts";
import { parseOrThrow } from "../validation.ts";

export interface IncrementRouteOptions {
  increment: Incrementer;
  maxKeyLength: number;
}

export function incrementRoute(options: IncrementRouteOptions) {
  const bodySchema = incrementBodySchema(options.maxKeyLength);
  return new Hono<AppEnv>().post("/increment", async (c) => {
    const body = parseOrThrow(bodySchema, await readJson(c.req.raw), "invalid_body");
    await options.increment(body.key, body.value);
    // Sent only now: Redis has acknowledged the write.
    return c.body(null, 202);
  });
}

/** Parses the body as JSON whatever the Content-Type says: a missing header is the commonest client slip. */
async function readJson(request: Request): Promise<unknown> {
  const bytes = await request.arrayBuffer();
  let text: string;
  try {
    // fatal: request.text() would turn bytes that are not UTF-8 into U+FFFD and store a key the client never
    // sent (and merge distinct keys). A leading BOM is still skipped, as request.text() did.
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new ApiError("invalid_body", "the body is not valid UTF-8");
  }
  if (text.trim() === "")
    throw new ApiError("invalid_body", "the body must be a JSON object with key and value");
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError("invalid_body", "the body is not valid JSON");
  }
}
