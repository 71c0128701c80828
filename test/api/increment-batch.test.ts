import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { shardKeys } from "../../lib/redis/keyspace.ts";
import { LUA } from "../../lib/redis/scripts.ts";
import { createTestApi, readProblem, type TestApi } from "../support/api.ts";

let api: TestApi;
let token: string;
beforeAll(async () => {
  api = await createTestApi({ SYNC_SHARDS: "1", RATE_LIMIT_POINTS: "100000" });
  token = await api.token();
  // Verified once here, so that requests sent together below are not spread over turns by the verifications.
  expect((await api.increment({ key: "warm-up", value: 1 }, token)).status).toBe(202);
});
afterAll(() => api.close());

const dirty = () => shardKeys(api.prefix, 0).dirty;

describe("POST /increment: the increments of one turn share a script", () => {
  it("sends them in one command, and in scripts of at most 1,000 when more arrive", async () => {
    const batches = vi.spyOn(LUA.incrementBatch, "run");
    const few = await Promise.all(
      Array.from({ length: 50 }, (_, i) => api.increment({ key: `few:${i % 7}`, value: 2 }, token)),
    );
    expect(few.map((response) => response.status).filter((status) => status !== 202)).toEqual([]);
    expect(batches).toHaveBeenCalledTimes(1);

    batches.mockClear();
    const many = await Promise.all(
      Array.from({ length: 2_500 }, () => api.increment({ key: "many", value: 1 }, token)),
    );
    expect(many.map((response) => response.status).filter((status) => status !== 202)).toEqual([]);
    // Each call's arguments are its groups, one per request here.
    expect(batches.mock.calls.map(([, , args]) => args.length)).toEqual([1_000, 1_000, 500]);
    expect(await api.node.redis.hget(dirty(), "many")).toBe("2500");
    expect(await api.node.redis.hget(dirty(), "few:0")).toBe(String(2 * 8));
  });

  it("answers each on its own: one that would overflow is refused, the others in its batch are applied", async () => {
    const nearMax = (2n ** 63n - 10n).toString();
    await api.node.redis.hset(dirty(), "edge", nearMax);
    const batches = vi.spyOn(LUA.incrementBatch, "run");
    const [overflow, other, fits] = await Promise.all([
      api.increment({ key: "edge", value: 11 }, token),
      api.increment({ key: "beside-edge", value: 1 }, token),
      api.increment({ key: "edge", value: 9 }, token),
    ]);
    expect(batches).toHaveBeenCalledTimes(1);
    expect(overflow?.status).toBe(422);
    expect(overflow && (await readProblem(overflow)).code).toBe("counter_out_of_range");
    expect([other?.status, fits?.status]).toEqual([202, 202]);
    expect(await api.node.redis.hmget(dirty(), "edge", "beside-edge")).toEqual([
      (2n ** 63n - 1n).toString(),
      "1",
    ]);
  });
});
