import type { RequestIdVariables } from "hono/request-id";
import type { Logger } from "../lib/logger.ts";
import type { ProblemCode } from "./errors.ts";

/** Who is calling, as established by the auth middleware. */
export interface Client {
  /** The token's `sub`; rate limits and idempotency records are kept per client. */
  id: string;
  scopes: ReadonlySet<string>;
}

export type Scope = "counters:write" | "counters:read";

/**
 * Read these with `c.get(name)`, not `c.var.name`: hono builds `c.var` anew from every variable on each
 * access, a measurable cost on the increment path.
 */
export interface AppEnv {
  Variables: RequestIdVariables & {
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
