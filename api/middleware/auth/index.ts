import type { MiddlewareHandler } from "hono";
import type { AppEnv, Client, Scope } from "../../context.ts";
import { ApiError } from "../../errors.ts";
import { requestHeader } from "../../request-headers.ts";
import { InvalidTokenError, KeySourceUnavailableError, type TokenVerifier } from "./verifier.ts";

const REALM = 'Bearer realm="tally"';
const BEARER = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)[ ]*$/i;

export interface AuthenticateOptions {
  /** null when auth is disabled by configuration: every caller is the one anonymous client. */
  verifier: TokenVerifier | null;
}

const ANONYMOUS: Client = {
  id: "anonymous",
  scopes: new Set<Scope>(["counters:write", "counters:read", "counters:reset"]),
  prefixes: undefined,
};

/** Establishes `c.var.client` from the bearer token, or answers 401 as RFC 6750 describes. */
export function authenticate(options: AuthenticateOptions): MiddlewareHandler<AppEnv> {
  const { verifier } = options;
  if (verifier === null) {
    return function anonymousClient(c, next) {
      c.set("client", ANONYMOUS);
      return next();
    };
  }
  return async function bearerToken(c, next) {
    const header = requestHeader(c, "authorization");
    if (header === undefined) {
      // RFC 6750 §3.1: a request without credentials gets the challenge but no error code.
      throw new ApiError("unauthorized", "send a bearer token in the Authorization header", {
        headers: { "WWW-Authenticate": REALM },
      });
    }
    const token = BEARER.exec(header)?.[1];
    if (token === undefined) throw invalidToken("the Authorization header is not a bearer token");
    try {
      const verified = await verifier(token);
      c.set("client", { id: verified.subject, scopes: verified.scopes, prefixes: verified.prefixes });
    } catch (error) {
      if (error instanceof InvalidTokenError) throw invalidToken(error.message);
      if (error instanceof KeySourceUnavailableError) {
        throw new ApiError("auth_unavailable", error.message, {
          headers: { "Retry-After": "5" },
          cause: error,
        });
      }
      throw error;
    }
    await next();
  };
}

/** Answers 403 unless the authenticated client's token carries `scope`. */
export function requireScope(scope: Scope): MiddlewareHandler<AppEnv> {
  return function scopeCheck(c, next) {
    if (!c.get("client").scopes.has(scope)) {
      throw new ApiError("insufficient_scope", `this operation needs the ${scope} scope`, {
        headers: { "WWW-Authenticate": `${REALM}, error="insufficient_scope", scope="${scope}"` },
      });
    }
    return next();
  };
}

function invalidToken(reason: string): ApiError {
  const description = reason.replace(/["\\]/g, "'");
  return new ApiError("unauthorized", reason, {
    headers: { "WWW-Authenticate": `${REALM}, error="invalid_token", error_description="${description}"` },
  });
}
