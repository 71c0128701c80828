import type { HttpBindings } from "@hono/node-server";
import type { Logger } from "../lib/logger.ts";
import type { ProblemCode } from "./errors.ts";

/** Who is calling, as established by the auth middleware. */
export interface Client {
  /** The token's `sub`; rate limits and idempotency records are kept per client. */
  id: string;
  scopes: ReadonlySet<string>;
  /**
   * The key prefixes the token is confined to (its tally_prefixes claim, see api/namespaces.ts); undefined
   * when it has none and may touch every key.
   */
  prefixes: readonly string[] | undefined;
}

export type Scope = "counters:write" | "counters:read" | "counters:reset";

/**
 * Read these with `c.get(name)`, not `c.var.name`: hono builds `c.var` anew from every variable on each
 * access, a measurable cost on the increment path.
 */
export interface AppEnv {
  /** Node's request and response under @hono/node-server; absent for a request built in a test. */
  Bindings: Partial<HttpBindings> | undefined;
  Variables: {
    /** The request's id (X-Request-Id): on every log line and problem of the request. */
    requestId: string;
    /** Headers of the response being built, set with `setResponseHeader` (api/respond.ts). */
    responseHeaders?: Record<string, string>;
    /** The response `respond` built for this request, which carries those headers already. */
    builtResponse?: Response;
    client: Client;
    /** The app's logger bound to the request id: every line a request logs goes through it. */
    logger: Logger;
    /** The code of the problem the request was answered with, if any (for metrics). */
    problem?: ProblemCode;
    /**
     * Spends more of the client's quota for this request (set by the rate limiter, after the request's own
     * point); rejects with a 429 problem when it does not fit.
     */
    chargeMore?: (points: number) => Promise<void>;
    /** The metrics label of the operation (or the operation's path, for a 405) the request reached. */
    route?: string;
  };
}
