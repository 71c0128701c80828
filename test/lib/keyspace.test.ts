import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { shardOfKey } from "../../lib/redis/keyspace.ts";

/** How many of `keys` land in each of `shards` shards. */
function spread(keys: string[], shards: number): number[] {
  const counts = new Array<number>(shards).fill(0);
  for (const key of keys) {
    const shard = shardOfKey(key, shards);
    counts[shard] = (counts[shard] ?? 0) + 1;
  }
  return counts;
}

describe("shardOfKey", () => {
  it("puts every key in shard 0 when there is one shard", () => {
    fc.assert(fc.property(fc.string({ unit: "grapheme" }), (key) => shardOfKey(key, 1) === 0));
  });

  it("names the same shard, within range, every time it is asked", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary" }), fc.integer({ min: 1, max: 1_024 }), (key, shards) => {
        const shard = shardOfKey(key, shards);
        expect(Number.isInteger(shard) && shard >= 0 && shard < shards).toBe(true);
        expect(shardOfKey(key, shards)).toBe(shard);
      }),
    );
  });

  it("spreads numbered keys evenly", () => {
    const keys = Array.from({ length: 20_000 }, (_, i) => `page:${i}`);
    for (const shards of [2, 4, 8, 16]) {
      const even = keys.length / shards;
      for (const count of spread(keys, shards)) expect(Math.abs(count - even) / even).toBeLessThan(0.1);
    }
  });

  it("spreads keys that differ only in the high bits of their characters", () => {
    // a, e, i, m, q, u, y share their two low bits: FNV-1a alone would put all 343 keys in one of 4 shards.
    const letters = [..."aeimquy"];
    const keys = letters.flatMap((a) => letters.flatMap((b) => letters.map((c) => `user:${a}${b}${c}`)));
    for (const count of spread(keys, 4)) expect(count).toBeGreaterThan(keys.length / 4 / 2);
  });
});
