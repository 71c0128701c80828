import { Hono } from "hono";
import type { AppEnv } from "../context.ts";
import { ApiError } from "../errors.ts";
import { counterKeySchema } from "../schemas.ts";
import type { CounterReader } from "../store/read-counter.ts";
import { parseOrThrow } from "../validation.ts";

export interface CountersRouteOptions {
  readCounter: CounterReader;
  maxKeyLength: number;
}

export function countersRoute(options: CountersRouteOptions) {
  const keySchema = counterKeySchema(options.maxKeyLength);
  // {[\s\S]+} so that keys containing "/" (percent-encoded or not) reach the handler whole; not {.+}, whose
  // "." stops at line terminators, so a stored key with a newline, CR, U+2028 or U+2029 fell through to a 405.
  return new Hono<AppEnv>().get("/counters/:key{[\\s\\S]+}", async (c) => {
    const key = parseOrThrow(keySchema, c.req.param("key"), "invalid_key");
    const reading = await options.readCounter(key);
    if (!reading.found) throw new ApiError("counter_not_found", "nothing was ever counted for this key");
    const total = reading.persisted + reading.pending;
    // Hand-built so 64-bit totals stay exact JSON integers rather than rounding through a double.
    const json = `{"key":${JSON.stringify(key)},"persisted":${reading.persisted},"pending":${reading.pending},"total":${total},"persistedAsOf":${JSON.stringify(reading.persistedAsOf)}}`;
    return c.body(json, 200, { "content-type": "application/json" });
  });
}
