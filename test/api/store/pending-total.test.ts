import { describe, expect, it } from "vitest";
import { type KeyInShard, settleCounter } from "../../../api/store/pending-total.ts";

const nothing: KeyInShard = {
  dirty: null,
  flushing: null,
  dirtyReset: false,
  flushingReset: false,
  flushingLive: false,
};
const shard = (held: Partial<KeyInShard>): KeyInShard => ({ ...nothing, ...held });

describe("settleCounter", () => {
  it("is Postgres' value plus the dirty delta and a flushing delta Postgres does not hold yet", () => {
    expect(settleCounter(100n, shard({ dirty: "3", flushing: "20", flushingLive: true }), [])).toEqual({
      total: 123n,
      exists: true,
    });
    // A committed batch whose hash is not deleted yet is in Postgres' value already.
    expect(settleCounter(120n, shard({ dirty: "3", flushing: "20", flushingLive: false }), [])).toEqual({
      total: 123n,
      exists: true,
    });
  });

  it("counts nothing for a key nothing holds, and a key only Redis holds as existing", () => {
    expect(settleCounter(null, nothing, [nothing])).toEqual({ total: 0n, exists: false });
    expect(settleCounter(null, shard({ dirty: "0" }), [])).toEqual({ total: 0n, exists: true });
  });

  it("adds what other shards hold from before SYNC_SHARDS changed", () => {
    const older = shard({ dirty: "5", flushing: "7", flushingLive: true });
    const committed = shard({ flushing: "1000", flushingLive: false });
    expect(settleCounter(1n, shard({ dirty: "2" }), [older, committed]).total).toBe(15n);
  });

  it("lets a reset in the dirty hash discard everything before it, and count what came after", () => {
    const home = shard({ dirtyReset: true, dirty: "4", flushing: "20", flushingLive: true });
    expect(settleCounter(100n, home, [shard({ dirty: "9" })])).toEqual({ total: 4n, exists: true });
    expect(settleCounter(100n, shard({ dirtyReset: true }), [])).toEqual({ total: 0n, exists: false });
  });

  it("lets a reset in an uncommitted flushing batch discard Postgres' value, but not the dirty delta after it", () => {
    const home = shard({ flushingReset: true, flushing: "20", flushingLive: true, dirty: "3" });
    expect(settleCounter(100n, home, [])).toEqual({ total: 23n, exists: true });
  });

  it("ignores a committed batch's reset: Postgres' value already starts after it", () => {
    const home = shard({ flushingReset: true, flushing: "20", flushingLive: false, dirty: "3" });
    expect(settleCounter(20n, home, [])).toEqual({ total: 23n, exists: true });
  });
});
