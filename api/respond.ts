import type { Context } from "hono";
import type { AppEnv } from "./context.ts";

/**
 * Every response of the app is built here, with the headers set for its request so far as a plain object.
 * @hono/node-server writes a response whose headers are a plain object straight to the socket; `c.header()`
 * would make hono keep them in a WHATWG Headers that the adapter then converts back, which cost more than
 * any middleware of the increment path.
 */

/** Sets a header of the response this request will get (the request id, the rate-limit state). */
export function setResponseHeader(c: Context<AppEnv>, name: string, value: string): void {
  const headers = c.get("responseHeaders");
  if (headers === undefined) c.set("responseHeaders", { [name]: value });
  else headers[name] = value;
}

/** The response: `status` and `body`, with every header set for the request and then `headers`. */
export function respond(
  c: Context<AppEnv>,
  status: number,
  body: string | null = null,
  headers?: Record<string, string>,
): Response {
  const set = c.get("responseHeaders");
  const all = headers === undefined ? set : set === undefined ? headers : { ...set, ...headers };
  const response = new Response(body, { status, headers: all });
  // Remembered in the request's context, not in a WeakSet: a weak entry per response is work for every
  // garbage collection.
  c.set("builtResponse", response);
  return response;
}

/**
 * Gives the request's headers to a response built some other way (`c.body()` in a route a test adds), by
 * hono's slower way. Called by the outermost middleware that sets any, once the response is made.
 */
export function carryResponseHeaders(c: Context<AppEnv>): void {
  const headers = c.get("responseHeaders");
  if (headers === undefined || c.get("builtResponse") === c.res) return;
  for (const [name, value] of Object.entries(headers)) c.header(name, value);
}

/** A JSON response, with the request's headers. */
export function respondJson(c: Context<AppEnv>, status: number, value: unknown): Response {
  return respond(c, status, JSON.stringify(value), { "content-type": "application/json" });
}
