import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { shardKeys } from "../../lib/redis/keyspace.ts";
import { MAX_KEY_BYTES } from "../../lib/settings.ts";
import { exactlyOnceViolations, Load } from "../../tools/load/accounted.ts";
import { waitFor } from "../harness/fixtures.ts";
import { Deployment } from "../support/deployment.ts";

// A key longer than a Postgres index entry holds, in real processes with MAX_KEY_LENGTH at its documented
// maximum. The API must refuse it; and one that reaches Redis anyway (written by a node with an older,
// looser limit) must be set aside by the syncer, never block its shard.

// Random hex does not compress, so its index entry is as long as the key.
const unindexable = randomBytes(1_503).toString("hex").slice(0, 3_005);
const SET_ASIDE = "delta set aside: Postgres refused its row";

describe("a key Postgres cannot index", () => {
  it("is refused by the API, and set aside by the syncer when it is in Redis anyway, while its shard syncs on", {
    timeout: 60_000,
  }, async () => {
    const d = await Deployment.forTest({
      env: { MAX_KEY_LENGTH: String(MAX_KEY_BYTES), BODY_LIMIT_BYTES: "65536" },
    });
    const api = await d.startApi();
    const syncer = await d.startSyncer();
    const token = await d.token();

    const refused = await fetch(`${api.url}/increment`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ key: unindexable, value: 1 }),
    });
    expect(refused.status).toBe(400);
    expect(await refused.json()).toMatchObject({
      code: "invalid_body",
      errors: [{ pointer: "/key", detail: `key must be at most ${MAX_KEY_BYTES} characters` }],
    });

    const load = new Load({ targets: () => [api.url], token, concurrency: 4, pauseMs: 2 }).start();
    await load.waitForAccepted(100);
    await d.redis.hincrby(shardKeys(d.prefix, 0).dirty, unindexable, 5);
    await syncer.waitForLog((line) => line.msg === SET_ASIDE);
    await load.waitForAccepted(100);
    await load.stop();
    await d.waitForDrain();

    const { rows } = await d.pool.query<{ delta: string; reason: string }>(
      "SELECT delta::text AS delta, reason FROM quarantined_deltas WHERE key = $1",
      [unindexable],
    );
    expect(rows).toEqual([{ delta: "5", reason: expect.stringContaining("SQLSTATE 54000") }]);
    expect(exactlyOnceViolations(load.sent, await d.counters())).toEqual([]);
    expect(syncer.logs.filter((line) => line.msg === "shard sync failed; its batch will be retried")).toEqual(
      [],
    );
    await waitFor(async () => ((await d.stalenessSeconds()) ?? Number.POSITIVE_INFINITY) < 10, {
      message: "the shard fell behind",
    });
  });
});
