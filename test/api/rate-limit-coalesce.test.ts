import fc from "fast-check";
import { Redis } from "ioredis";
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { coalesceConsumes } from "../../api/middleware/rate-limit/coalesce.ts";
import { randomPrefix, sharedRedisUrl } from "../harness/fixtures.ts";

type Decision = { passed: boolean; remaining: number; consumed: number };

async function decide(attempt: Promise<RateLimiterRes>): Promise<Decision> {
  const toDecision = (passed: boolean, state: RateLimiterRes) => ({
    passed,
    remaining: state.remainingPoints,
    consumed: state.consumedPoints,
  });
  return attempt.then(
    (state) => toDecision(true, state),
    (rejection: unknown) => {
      if (rejection instanceof RateLimiterRes) return toDecision(false, rejection);
      throw rejection;
    },
  );
}

/** Counts the consume calls that reach the wrapped limiter. */
function countConsumes<L extends RateLimiterMemory | RateLimiterRedis>(
  limiter: L,
): { limiter: L; calls: number[] } {
  const calls: number[] = [];
  const consume = limiter.consume.bind(limiter);
  limiter.consume = (key, points = 1, options) => {
    calls.push(points);
    return consume(key, points, options);
  };
  return { limiter, calls };
}

describe("coalesced rate-limit consumes, against Redis", () => {
  let redis: Redis;
  beforeAll(async () => {
    redis = new Redis(sharedRedisUrl(), { enableAutoPipelining: true });
  });
  afterAll(() => redis.disconnect());

  const redisLimiter = (points: number) =>
    new RateLimiterRedis({ storeClient: redis, keyPrefix: randomPrefix(), points, duration: 60 });

  it("spends one consume per client per turn and decides as single consumes would", async () => {
    const { limiter, calls } = countConsumes(redisLimiter(3));
    const spender = coalesceConsumes(limiter);
    const decisions = await Promise.all(Array.from({ length: 5 }, () => decide(spender.consume("alice"))));

    expect(calls).toEqual([5]);
    expect(decisions).toEqual([
      { passed: true, remaining: 2, consumed: 1 },
      { passed: true, remaining: 1, consumed: 2 },
      { passed: true, remaining: 0, consumed: 3 },
      { passed: false, remaining: 0, consumed: 4 },
      { passed: false, remaining: 0, consumed: 5 },
    ]);
  });

  it("keeps clients apart within a turn and continues the window across turns", async () => {
    const { limiter, calls } = countConsumes(redisLimiter(3));
    const spender = coalesceConsumes(limiter);
    const first = await Promise.all([
      decide(spender.consume("alice")),
      decide(spender.consume("bob")),
      decide(spender.consume("alice")),
    ]);
    expect(first.map((d) => [d.passed, d.consumed])).toEqual([
      [true, 1],
      [true, 1],
      [true, 2],
    ]);
    const second = await Promise.all([decide(spender.consume("alice")), decide(spender.consume("alice"))]);
    expect(second.map((d) => [d.passed, d.consumed])).toEqual([
      [true, 3],
      [false, 4],
    ]);
    expect(calls).toEqual([2, 1, 2]);
    // The window in Redis moved exactly as five single consumes by alice would have moved it.
    expect((await limiter.get("alice"))?.consumedPoints).toBe(4);
  });

  it("fails every waiting request with the store's error, not a refusal", async () => {
    const offline = new Redis(sharedRedisUrl(), { lazyConnect: true, enableOfflineQueue: false });
    const limiter = new RateLimiterRedis({
      storeClient: offline,
      keyPrefix: randomPrefix(),
      points: 10,
      duration: 60,
      rejectIfRedisNotReady: true,
    });
    const spender = coalesceConsumes(limiter);
    const outcomes = await Promise.allSettled([spender.consume("alice"), spender.consume("alice")]);
    for (const outcome of outcomes) {
      expect(outcome.status).toBe("rejected");
      if (outcome.status === "rejected") {
        expect(outcome.reason).toBeInstanceOf(Error);
        expect(outcome.reason).not.toBeInstanceOf(RateLimiterRes);
      }
    }
    offline.disconnect();
  });

  it("carries the quota for the RateLimit-Policy header", () => {
    const spender = coalesceConsumes(redisLimiter(7));
    expect([spender.points, spender.duration]).toEqual([7, 60]);
  });
});

describe("coalesced rate-limit consumes, property", () => {
  it("passes and refuses exactly the requests single consumes would, whatever the turns look like", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 6 }),
        fc.array(fc.array(fc.constantFrom("a", "b", "c"), { maxLength: 8 }), { maxLength: 6 }),
        async (points, turns) => {
          const single = new RateLimiterMemory({ points, duration: 60 });
          const spender = coalesceConsumes(new RateLimiterMemory({ points, duration: 60 }));
          for (const clients of turns) {
            const coalesced = await Promise.all(clients.map((client) => decide(spender.consume(client))));
            const expected: Decision[] = [];
            for (const client of clients) expected.push(await decide(single.consume(client, 1)));
            expect(coalesced).toEqual(expected);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("with several points per request (a batch), decides as single consumes of those points would", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 12 }),
        fc.array(
          fc.array(fc.record({ client: fc.constantFrom("a", "b"), points: fc.integer({ min: 1, max: 5 }) }), {
            maxLength: 8,
          }),
          { maxLength: 5 },
        ),
        async (quota, turns) => {
          const single = new RateLimiterMemory({ points: quota, duration: 60 });
          const spender = coalesceConsumes(new RateLimiterMemory({ points: quota, duration: 60 }));
          for (const requests of turns) {
            const coalesced = await Promise.all(
              requests.map(({ client, points }) => decide(spender.consume(client, points))),
            );
            const expected: Decision[] = [];
            for (const { client, points } of requests)
              expected.push(await decide(single.consume(client, points)));
            expect(coalesced).toEqual(expected);
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});
