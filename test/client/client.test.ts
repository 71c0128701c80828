import { describe, expect, it } from "vitest";
import {
  TallyClient,
  type TallyError,
  TallyOutcomeUnknownError,
  TallyRejectedError,
} from "../../client/src/index.ts";
import { mintToken } from "../../lib/tokens.ts";
import { startRedis } from "../../tools/servers/redis.ts";
import { TEST_SECRET } from "../support/api.ts";
import { Deployment } from "../support/deployment.ts";

// The client against tally as production runs it: start:api and start:syncer processes on real Redis and
// Postgres. Every figure is checked where it ends up, in Postgres.

/** Calls `increment` `calls` times over `keys` keys, all at once, as a busy server's handlers would. */
function burst(client: TallyClient, calls: number, keys: number, prefix = "k"): Promise<void>[] {
  return Array.from({ length: calls }, (_, i) => client.increment(`${prefix}${i % keys}`, (i % 3) + 1));
}

/** What `burst` adds to each key. */
function burstTotals(calls: number, keys: number, prefix = "k"): Map<string, bigint> {
  const totals = new Map<string, bigint>();
  for (let i = 0; i < calls; i++) {
    const key = `${prefix}${i % keys}`;
    totals.set(key, (totals.get(key) ?? 0n) + BigInt((i % 3) + 1));
  }
  return totals;
}

async function persisted(d: Deployment): Promise<Map<string, bigint>> {
  await d.waitForDrain();
  return d.counters();
}

describe("TallyClient against the service", () => {
  it("folds many concurrent callers into batches and counts every call exactly once", async () => {
    const d = await Deployment.forTest({ env: { SYNC_SHARDS: "4" } });
    const api = await d.startApi();
    await d.startSyncer();
    const client = new TallyClient({ url: api.url, token: await d.token() });
    const callers = Array.from({ length: 20 }, (_, caller) =>
      Promise.all(burst(client, 500, 37, `caller${caller % 4}:`)),
    );
    await Promise.all(callers);
    const { stats } = client;
    expect(stats.incrementsAccepted).toBe(10_000);
    expect(stats.incrementsFailed).toBe(0);
    // Batched: far fewer requests than calls.
    expect(stats.batchesAccepted).toBeLessThan(100);
    await client.close();

    const expected = new Map<string, bigint>();
    for (let caller = 0; caller < 20; caller++) {
      for (const [key, total] of burstTotals(500, 37, `caller${caller % 4}:`)) {
        expected.set(key, (expected.get(key) ?? 0n) + total);
      }
    }
    expect(await persisted(d)).toEqual(expected);
  });

  it("close() right after a burst sends all of it before it resolves", async () => {
    const d = await Deployment.forTest();
    const api = await d.startApi();
    await d.startSyncer();
    const client = new TallyClient({ url: api.url, token: await d.token(), maxWaitMs: 1_000 });
    let resolved = 0;
    for (const call of burst(client, 5_000, 100)) void call.then(() => resolved++);
    await client.close();
    // Every call had resolved by the time close() did.
    expect(resolved).toBe(5_000);
    expect(client.stats).toMatchObject({ buffered: 0, inFlight: 0, incrementsAccepted: 5_000 });
    expect(await persisted(d)).toEqual(burstTotals(5_000, 100));
  });

  it("fetches a new token after a 401 and sends the batch again; a fixed token refused is a rejection", async () => {
    const d = await Deployment.forTest();
    const api = await d.startApi();
    let fetched = 0;
    const client = new TallyClient({
      url: api.url,
      token: async () => {
        fetched += 1;
        // The first one is signed with a key the service does not know, as a rotated-out key would be.
        const secret = fetched === 1 ? `${TEST_SECRET}-rotated-out` : TEST_SECRET;
        return mintToken({ secret, subject: "refresh", scopes: ["counters:write"] });
      },
    });
    await client.increment("refreshed", 5);
    expect(fetched).toBe(2);
    await client.close();

    const fixed = new TallyClient({ url: api.url, token: "not-a-token" });
    const refusal = await fixed.increment("never", 1).catch((error: unknown) => error);
    expect(refusal).toBeInstanceOf(TallyRejectedError);
    expect((refusal as TallyRejectedError).problem).toMatchObject({ status: 401, code: "unauthorized" });
    await fixed.close();
  });

  it("waits out a 429 as the service's headers say and counts every call once", async () => {
    const d = await Deployment.forTest({ env: { RATE_LIMIT_POINTS: "40", RATE_LIMIT_DURATION_S: "1" } });
    const api = await d.startApi();
    await d.startSyncer();
    const errors: TallyError[] = [];
    const client = new TallyClient({
      url: api.url,
      token: await d.token(),
      maxBatchSize: 20,
      maxInFlight: 1,
      onError: (error) => errors.push(error),
    });
    await Promise.all(burst(client, 300, 300));
    await client.close();
    expect(client.stats.retries).toBeGreaterThan(0);
    expect(errors.every((error) => error instanceof TallyRejectedError && error.status === 429)).toBe(true);
    expect(await persisted(d)).toEqual(burstTotals(300, 300));
  });

  it("rejects every call of a batch the service refuses, with its problem", async () => {
    const d = await Deployment.forTest({ env: { MAX_KEY_LENGTH: "8" } });
    const api = await d.startApi();
    // Configured for longer keys than this service takes: the service's own validation refuses the batch.
    const client = new TallyClient({ url: api.url, token: await d.token(), maxKeyLength: 64 });
    const [short, long] = await Promise.allSettled([
      client.increment("short", 1),
      client.increment("much-too-long", 1),
    ]);
    await client.close();
    for (const outcome of [short, long]) {
      expect(outcome.status).toBe("rejected");
      const error = (outcome as PromiseRejectedResult).reason as TallyRejectedError;
      expect(error).toBeInstanceOf(TallyRejectedError);
      expect(error.problem).toMatchObject({
        status: 400,
        code: "invalid_body",
        errors: [{ pointer: "/increments/1/key", detail: "key must be at most 8 characters" }],
      });
      expect(error.partlyApplied).toBe(false);
    }
    expect(client.stats.incrementsFailed).toBe(2);
  });

  it("says the outcome is unknown when retries run out, and resend() settles it once", async () => {
    const redis = await startRedis({ appendOnly: true });
    try {
      const d = await Deployment.forTest({ redisUrl: redis.url });
      const api = await d.startApi();
      await d.startSyncer();
      const client = new TallyClient({
        url: api.url,
        token: await d.token(),
        // The service asks for a second between attempts (Retry-After: 1): room for two or three.
        retry: { budgetMs: 2_500, baseDelayMs: 20, maxDelayMs: 50 },
      });
      await client.increment("before", 1);
      await redis.stop();
      const failure = await client.increment("during", 7).catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(TallyOutcomeUnknownError);
      const unknown = failure as TallyOutcomeUnknownError;
      expect(unknown.attempts).toBeGreaterThanOrEqual(2);
      expect(unknown.increments).toEqual([{ key: "during", value: 7 }]);
      expect(unknown.message).toContain(unknown.idempotencyKey);

      await redis.start();
      await client.resend(unknown);
      // Twice: the second is answered from the record and applies nothing.
      await client.resend(unknown);
      await client.close();
      expect(await persisted(d)).toEqual(
        new Map([
          ["before", 1n],
          ["during", 7n],
        ]),
      );
    } finally {
      await redis.destroy();
    }
  });
});
