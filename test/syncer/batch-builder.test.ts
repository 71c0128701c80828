import { describe, expect, it } from "vitest";
import { BatchBuilder } from "../../syncer/batch-builder.ts";

const header = { id: "b", shard: 0, seq: 1n, swappedAt: new Date(0) };

describe("BatchBuilder", () => {
  it("keeps the first copy of a field HSCAN returned twice, in the same page or a later one", () => {
    const builder = new BatchBuilder(header, []);
    builder.addPage(["a", "1", "b", "2", "a", "1"]);
    builder.addPage(["b", "2", "c", "3"]);
    expect(builder.takeStatement(1, 10)).toEqual({ keys: ["a", "b", "c"], deltas: ["1", "2", "3"] });
    expect(builder.totals).toEqual({ keyCount: 3, deltaSum: 6n, resetCount: 0 });
  });

  it("leaves out keys whose increments cancelled out", () => {
    const builder = new BatchBuilder(header, []);
    builder.addPage(["zero", "0", "kept", "-4"]);
    expect(builder.batch.keys).toEqual(["kept"]);
    expect(builder.totals).toEqual({ keyCount: 1, deltaSum: -4n, resetCount: 0 });
  });

  it("hands out the oldest waiting rows, no fewer than the minimum and no more than the maximum", () => {
    const builder = new BatchBuilder(header, []);
    builder.addPage(["a", "1", "b", "1"]);
    expect(builder.takeStatement(3, 10)).toBeUndefined();
    builder.addPage(["c", "1", "d", "1", "e", "1"]);
    expect(builder.takeStatement(3, 2)).toEqual({ keys: ["a", "b"], deltas: ["1", "1"] });
    expect(builder.takeStatement(3, 10)?.keys).toEqual(["c", "d", "e"]);
    expect(builder.takeStatement(1, 10)).toBeUndefined();
    builder.addPage(["f", "1", "a", "1"]);
    expect(builder.takeStatement(1, 10)?.keys).toEqual(["f"]);
    // The whole batch stays whole for the ledger and the listeners.
    expect(builder.batch.keys).toEqual(["a", "b", "c", "d", "e", "f"]);
  });

  it("sums deltas beyond 2^53 exactly", () => {
    const builder = new BatchBuilder(header, []);
    builder.addPage(["x", "9007199254740993", "y", "9007199254740993"]);
    expect(builder.totals.deltaSum).toBe(18014398509481986n);
  });
});
