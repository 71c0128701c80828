import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { waitFor } from "../harness/fixtures.ts";
import { type ApiProcess, Deployment } from "../support/deployment.ts";

// POST /increments under kill -9 of an API node and of the syncer, in real processes. Each batch carries an
// Idempotency-Key; one not answered 202 (a connection cut, a 503) is sent again with the same key and body,
// to the surviving node, until it is. Postgres must then hold every increment of every batch exactly once.

const BATCH = 12;
const SENDERS = 4;

const batch = (n: number) =>
  Array.from({ length: BATCH }, (_, i) => ({ key: `crash:${n % 7}:${i}`, value: n + 1 }));

describe("batches under kill -9", () => {
  it("of an API node and of the syncer: retried with their keys, every increment counts exactly once", {
    timeout: 90_000,
  }, async () => {
    const d = await Deployment.forTest({ env: { SYNC_SHARDS: "4" } });
    let apis: ApiProcess[] = [await d.startApi(), await d.startApi()];
    let syncer = await d.startSyncer();
    const token = await d.token();
    const statuses = new Map<number, number | undefined>();
    const send = async (n: number, target: string) => {
      try {
        const response = await fetch(`${target}/increments`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "idempotency-key": `crash-${n}` },
          body: JSON.stringify({ increments: batch(n) }),
          signal: AbortSignal.timeout(10_000),
        });
        await response.arrayBuffer();
        statuses.set(n, response.status);
      } catch {
        statuses.set(n, undefined);
      }
    };

    let next = 0;
    let running = true;
    const senders = Array.from({ length: SENDERS }, async (_, sender) => {
      while (running) {
        const n = next++;
        await send(n, (apis[(n + sender) % apis.length] as ApiProcess).url);
      }
    });
    await waitFor(async () => statuses.size >= 40, { message: "the batches never got going" });
    const [victim, survivor] = apis as [ApiProcess, ApiProcess];
    await Promise.all([victim.stop("SIGKILL"), syncer.stop("SIGKILL")]);
    apis = [survivor];
    syncer = await d.startSyncer();
    await sleep(1_000);
    running = false;
    await Promise.all(senders);

    const unanswered = [...statuses].filter(([, status]) => status !== 202).map(([n]) => n);
    for (const n of unanswered) {
      await waitFor(
        async () => {
          await send(n, survivor.url);
          return statuses.get(n) === 202;
        },
        { message: `batch ${n} was never accepted by the surviving node` },
      );
    }
    await d.waitForDrain(30_000);

    const expected = new Map<string, bigint>();
    for (const n of statuses.keys()) {
      for (const { key, value } of batch(n)) expected.set(key, (expected.get(key) ?? 0n) + BigInt(value));
    }
    expect(await d.counters()).toEqual(expected);
    expect(statuses.size).toBeGreaterThan(40);
  });
});
