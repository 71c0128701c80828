import type { Context } from "hono";
import type { AppEnv } from "./context.ts";

/**
 * A request header, by its lower-case name. Under @hono/node-server it comes from node's IncomingMessage,
 * whose headers are already a plain object: hono's `c.req.header()` would first copy every header of the
 * request into a WHATWG Headers, one of the larger costs of a small request. A request built in a test
 * (`app.request()`) has no IncomingMessage and goes through hono.
 *
 * Node joins repeated headers with ", " and keeps the first of those that may appear once (Authorization,
 * Content-Length), as it documents for `message.headers`.
 */
export function requestHeader(c: Context<AppEnv>, name: Lowercase<string>): string | undefined {
  const incoming = c.env?.incoming;
  if (incoming === undefined) return c.req.header(name);
  const value = incoming.headers[name];
  return Array.isArray(value) ? value.join(", ") : value;
}
