import { type RateLimiterAbstract, RateLimiterRes } from "rate-limiter-flexible";
import { batchPerTurn } from "../../../lib/turn-batch.ts";

/** Spends one point of a client's quota, with rate-limiter-flexible's `consume(key, 1)` contract. */
export interface PointSpender {
  /** The quota: points per window of `duration` seconds. */
  readonly points: number;
  readonly duration: number;
  /**
   * Resolves with the quota's state when the point fits in the window; rejects with a RateLimiterRes when
   * it does not, or with an Error when the limiter's store cannot answer.
   */
  consume(clientId: string, points?: number): Promise<RateLimiterRes>;
}

interface Waiter {
  clientId: string;
  points: number;
  resolve(state: RateLimiterRes): void;
  reject(reason: unknown): void;
}

/**
 * Spends points through `limiter`, one `consume(client, n)` per client for all the n requests that arrived
 * in the same event-loop turn, instead of one per request.
 *
 * A busy client sends many requests at once, and each consume is a Lua script run in Redis and a command
 * object, a promise and a reply on the API's side: it was about a third of an increment's cost. Batching
 * changes no decision. The limiter reports the window's count after the batch, so the batch's requests are
 * numbered as if each had consumed its own points in arrival order: those that still fit in the quota pass,
 * the rest are refused, and the counter moves exactly as n single consumes would have moved it (a refused
 * consume counts too, in both cases). A request may spend several points (a batch of increments spends
 * one per increment). The cost is the wait for the end of the turn.
 */
export function coalesceConsumes(limiter: RateLimiterAbstract): PointSpender {
  const spend = async (clientId: string, waiters: Waiter[]) => {
    const total = waiters.reduce((sum, waiter) => sum + waiter.points, 0);
    let after: RateLimiterRes;
    try {
      after = await limiter.consume(clientId, total);
    } catch (rejection) {
      if (!(rejection instanceof RateLimiterRes)) {
        for (const waiter of waiters) waiter.reject(rejection);
        return;
      }
      after = rejection;
    }
    let consumed = after.consumedPoints - total;
    waiters.forEach((waiter, index) => {
      consumed += waiter.points;
      const state = new RateLimiterRes(
        Math.max(limiter.points - consumed, 0),
        after.msBeforeNext,
        consumed,
        after.isFirstInDuration && index === 0,
      );
      if (consumed <= limiter.points) waiter.resolve(state);
      else waiter.reject(state);
    });
  };

  const collect = batchPerTurn<Waiter>((waiters) => {
    const byClient = new Map<string, Waiter[]>();
    for (const waiter of waiters) {
      const same = byClient.get(waiter.clientId);
      if (same === undefined) byClient.set(waiter.clientId, [waiter]);
      else same.push(waiter);
    }
    for (const [clientId, same] of byClient) void spend(clientId, same);
  });

  return {
    points: limiter.points,
    duration: limiter.duration,
    consume: (clientId, points = 1) =>
      new Promise((resolve, reject) => collect({ clientId, points, resolve, reject })),
  };
}
