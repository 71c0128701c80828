import { describe, expect, it } from "vitest";
import { exactlyOnceViolations, Load } from "../../tools/load/accounted.ts";
import { waitFor } from "../harness/fixtures.ts";
import { Deployment } from "../support/deployment.ts";

// A key whose Postgres total would leave bigint, in the middle of a batch of ordinary keys, in real
// processes. The syncer must set its delta aside (nothing lost, reported at error level) and apply every
// other key, batch after batch: one bad key must never block the rest.

const NEAR_MAX_KEY = "near-max";
const NEAR_MAX = 9_223_372_036_854_775_000n;
const BIGINT_MAX = 2n ** 63n - 1n;
// Each push alone leaves bigint (headroom is 807), so whatever batch a push lands in, alone or beside
// another push, the key's delta in that batch is set aside and the stored total never moves.
const PUSH = 1_000;
const PUSHES = 4;
const SET_ASIDE = "delta set aside: Postgres refused its row";

describe("a total that would leave bigint", () => {
  it("is set aside with its exact delta and reported, while every other key goes on syncing", async () => {
    expect(BIGINT_MAX - NEAR_MAX).toBeLessThan(PUSH);
    const d = await Deployment.forTest();
    await d.pool.query("INSERT INTO counters VALUES ($1, $2, now())", [NEAR_MAX_KEY, NEAR_MAX.toString()]);
    const api = await d.startApi();
    const syncer = await d.startSyncer();
    const token = await d.token();
    const load = new Load({ targets: () => [api.url], token, concurrency: 4, pauseMs: 2 }).start();
    await load.waitForAccepted(100);

    const setAsideRows = async () => {
      const { rows } = await d.pool.query<{ count: number }>(
        "SELECT count(*)::int AS count FROM quarantined_deltas WHERE key = $1",
        [NEAR_MAX_KEY],
      );
      return rows[0]?.count ?? 0;
    };
    // Pushed one batch at a time (the next push only once the previous one was set aside), so the syncer
    // meets the bad key in several batches, each full of ordinary keys from the load.
    const pushed: number[] = [];
    for (let i = 0; i < PUSHES; i++) {
      const value = PUSH + i;
      const response = await fetch(`${api.url}/increment`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ key: NEAR_MAX_KEY, value }),
      });
      expect(response.status).toBe(202);
      pushed.push(value);
      await waitFor(async () => (await setAsideRows()) === i + 1, {
        message: `push ${i + 1} of ${NEAR_MAX_KEY} was never set aside`,
      });
      await load.waitForAccepted(100);
    }
    await load.stop();
    // Nothing stuck: no flushing hash left behind by a batch that could not commit.
    await d.waitForDrain();

    const counters = await d.counters();
    expect(counters.get(NEAR_MAX_KEY)).toBe(NEAR_MAX);
    const { rows: setAside } = await d.pool.query<{ key: string; delta: string; key_count: number }>(
      `SELECT q.key, q.delta::text AS delta, b.key_count
         FROM quarantined_deltas q LEFT JOIN sync_batches b USING (batch_id) ORDER BY q.id`,
    );
    // Only the bad key, exactly what was accepted for it, each from a batch that committed with other keys.
    expect(setAside.map((row) => row.key)).toEqual(pushed.map(() => NEAR_MAX_KEY));
    expect(setAside.map((row) => BigInt(row.delta))).toEqual(pushed.map(BigInt));
    for (const row of setAside) expect(row.key_count).toBeGreaterThan(1);
    // Every other key exact: applied in the very batches that set the bad key aside, and in later ones.
    counters.delete(NEAR_MAX_KEY);
    expect(exactlyOnceViolations(load.sent, counters)).toEqual([]);
    expect(load.count("unknown")).toBe(0);
    const { rows: later } = await d.pool.query<{ count: number }>(
      `SELECT count(*)::int AS count FROM sync_batches
        WHERE committed_at > (SELECT max(quarantined_at) FROM quarantined_deltas)`,
    );
    expect(later[0]?.count).toBeGreaterThan(0);

    // Reported at error level, once per set-aside delta, and no batch ever failed over it.
    const reports = syncer.logs.filter((line) => line.msg === SET_ASIDE);
    expect(reports.map((line) => [line.level, line.key, line.delta])).toEqual(
      pushed.map((value) => ["error", NEAR_MAX_KEY, String(value)]),
    );
    expect(syncer.logs.filter((line) => line.msg === "shard sync failed; its batch will be retried")).toEqual(
      [],
    );
  });
});
