import type { RequestIdVariables } from "hono/request-id";

/** Who is calling, as established by the auth middleware. */
export interface Client {
  /** The token's `sub`; rate limits and idempotency records are kept per client. */
  id: string;
  scopes: ReadonlySet<string>;
}

export type Scope = "counters:write" | "counters:read";

export interface AppEnv {
  Variables: RequestIdVariables & { client: Client };
}
