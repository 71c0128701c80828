import { describe, expect, it } from "vitest";
import { TallyClient, TallyRejectedError } from "../../client/src/index.ts";
import { mintToken } from "../../lib/tokens.ts";
import { TEST_SECRET } from "../support/api.ts";
import { Deployment } from "../support/deployment.ts";

// The client's reads, listing and reset against start:api and start:syncer processes.

describe("TallyClient's reads and resets", () => {
  it("reads one, many and every counter under a prefix, exactly beyond 2^53, and resets one exactly once", async () => {
    const d = await Deployment.forTest({ env: { SYNC_SHARDS: "4" } });
    const api = await d.startApi();
    await d.startSyncer();
    const client = new TallyClient({ url: api.url, token: await d.token() });
    await d.pool.query(
      "INSERT INTO counters (key, value, updated_at) VALUES ('app:huge', 9223372036854775000, now())",
    );
    await Promise.all([
      client.increment("app:a", 2),
      client.increment("app:b", 3),
      client.increment("app:🦄", 1),
    ]);
    await client.flush();

    expect(await client.read("app:a")).toMatchObject({ key: "app:a", total: 2n });
    expect((await client.read("app:huge"))?.total).toBe(9223372036854775000n);
    expect(await client.read("app:never")).toBeNull();
    // A key that holds the text of a total field is still read as its own key with its own total.
    const tricky = 'q","total":5,"x":"';
    await client.increment(tricky, 1);
    await client.flush();
    expect(await client.read(tricky)).toMatchObject({ key: tricky, total: 1n });

    // More keys than one request takes, in the order asked.
    const keys = [...Array.from({ length: 1_500 }, (_, i) => `app:none-${i}`), "app:b"];
    const readings = await client.readMany(keys);
    expect(readings.map((reading) => reading.key)).toEqual(keys);
    expect(readings.at(-1)?.total).toBe(3n);
    expect(readings[0]).toMatchObject({ persisted: 0n, pending: 0n, total: 0n });

    const listed: string[] = [];
    for await (const counter of client.listAll("app:", 2)) listed.push(counter.key);
    expect(listed).toEqual(["app:a", "app:b", "app:huge", "app:🦄"]);
    expect((await client.list({ prefix: "app:", limit: 3 })).nextCursor).not.toBeNull();

    await client.reset("app:a");
    expect(await client.read("app:a")).toBeNull();
    await client.increment("app:a", 5);
    await client.flush();
    // Once per Idempotency-Key: a retry of the first reset does not discard the 5 counted since.
    const idempotencyKey = "reset-app-a";
    await client.reset("app:a", { idempotencyKey });
    await client.increment("app:a", 7);
    await client.flush();
    await client.reset("app:a", { idempotencyKey });
    expect((await client.read("app:a"))?.total).toBe(7n);

    await d.waitForDrain();
    expect((await d.counters()).get("app:a")).toBe(7n);
    await client.close();
  });

  it("rejects a reset the token may not make, with the service's problem", async () => {
    const d = await Deployment.forTest();
    const api = await d.startApi();
    const token = await mintToken({ secret: TEST_SECRET, subject: "reader", scopes: ["counters:read"] });
    const client = new TallyClient({ url: api.url, token });
    const refusal = await client.reset("k").catch((error: unknown) => error);
    expect(refusal).toBeInstanceOf(TallyRejectedError);
    expect((refusal as TallyRejectedError).problem.code).toBe("insufficient_scope");
  });
});
