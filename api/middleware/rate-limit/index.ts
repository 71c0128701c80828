import type { Context, MiddlewareHandler } from "hono";
import { RateLimiterRes } from "rate-limiter-flexible";
import { redisFailureOf } from "../../../lib/redis/errors.ts";
import type { AppEnv } from "../../context.ts";
import { ApiError } from "../../errors.ts";
import { setResponseHeader } from "../../respond.ts";
import { redisProblem } from "../../store-problems.ts";
import type { PointSpender } from "./coalesce.ts";

export interface RateLimitOptions {
  limiter: PointSpender;
  /** Name of the quota in the RateLimit-Policy header. */
  policy?: string;
}

/**
 * Per-client fixed-window limit, keyed by the authenticated client id. Every response that passes through
 * carries the IETF RateLimit-Policy / RateLimit fields (draft-ietf-httpapi-ratelimit-headers), so clients
 * can pace themselves before they are refused; a refusal is a 429 with Retry-After.
 */
export function rateLimit(options: RateLimitOptions): MiddlewareHandler<AppEnv> {
  const { limiter } = options;
  const policy = options.policy ?? "default";
  if (!/^[a-z][a-z0-9_-]*$/.test(policy))
    throw new TypeError(`rate limit policy name "${policy}" is not a token`);
  const policyHeader = `"${policy}";q=${limiter.points};w=${limiter.duration}`;

  const stateHeader = (state: RateLimiterRes) =>
    `"${policy}";r=${state.remainingPoints};t=${Math.ceil(state.msBeforeNext / 1000)}`;

  const charge = async (c: Context<AppEnv>, points: number) => {
    let state: RateLimiterRes;
    try {
      state = await limiter.consume(c.get("client").id, points);
    } catch (rejection) {
      if (rejection instanceof RateLimiterRes) {
        const retryAfter = Math.max(1, Math.ceil(rejection.msBeforeNext / 1000));
        throw new ApiError(
          "rate_limited",
          `rate limit of ${limiter.points} per ${limiter.duration}s reached`,
          {
            headers: {
              "RateLimit-Policy": policyHeader,
              RateLimit: stateHeader(rejection),
              "Retry-After": String(retryAfter),
            },
          },
        );
      }
      // The limiter shares the counters' Redis: if it cannot answer (down, or full), neither could the write.
      throw redisProblem(redisFailureOf(rejection), rejection);
    }
    setResponseHeader(c, "RateLimit-Policy", policyHeader);
    setResponseHeader(c, "RateLimit", stateHeader(state));
  };

  return async function rateLimitByClient(c, next) {
    // A point for the request; an operation whose cost is known only once it has read the body (a batch of
    // increments costs one per increment) charges the rest through `chargeMore`.
    await charge(c, 1);
    c.set("chargeMore", (points) => (points > 0 ? charge(c, points) : Promise.resolve()));
    await next();
  };
}

/**
 * RATE_LIMIT_DISABLED: no quota and no RateLimit fields, for a deployment whose proxy limits clients. What an
 * operation charges beyond the first point costs nothing either.
 */
export function noRateLimit(): MiddlewareHandler<AppEnv> {
  const chargeNothing = () => Promise.resolve();
  return function noQuota(c, next) {
    c.set("chargeMore", chargeNothing);
    return next();
  };
}

/**
 * Charges the request's cost beyond the point it paid to get in (a batch pays one per item), before any of
 * its work is done; a 429 when it does not fit.
 */
export async function chargeRest(c: Context<AppEnv>, points: number): Promise<void> {
  const chargeMore = c.get("chargeMore");
  if (chargeMore === undefined) throw new ApiError("internal_error", "the request's quota was not charged");
  await chargeMore(points);
}
