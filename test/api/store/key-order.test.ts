import { describe, expect, it } from "vitest";
import { compareKeys, prefixEnd } from "../../../api/store/key-order.ts";

const utf8Order = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

describe("compareKeys", () => {
  const keys = [
    "",
    "a",
    "ab",
    "a\u007f",
    "a\u00e9",
    "a\ud7ff",
    "a\ue000",
    "a\ufffd",
    "a\uffff",
    "a🦄",
    "a\u{10ffff}",
    "b",
  ];

  it("orders keys as their UTF-8 bytes order, where emoji come after the rest of the BMP", () => {
    for (const left of keys)
      for (const right of keys)
        expect(Math.sign(compareKeys(left, right)), `${left} ${right}`).toBe(
          Math.sign(utf8Order(left, right)),
        );
    // JavaScript's own order would put the emoji first.
    expect("a🦄" < "a\ufffd").toBe(true);
    expect(compareKeys("a🦄", "a\ufffd")).toBeGreaterThan(0);
  });
});

describe("prefixEnd", () => {
  it("is above every key with the prefix and at or below every key after them", () => {
    for (const prefix of ["a", "team-a:", "a\ud7ff", "a🦄", "a\u{10ffff}"]) {
      const end = prefixEnd(prefix);
      if (end === null) throw new Error(`no end for ${prefix}`);
      for (const inside of [prefix, `${prefix}\u0001`, `${prefix}\u{10ffff}\u{10ffff}`])
        expect(compareKeys(inside, end), `${inside} < ${end}`).toBeLessThan(0);
      expect(end.isWellFormed()).toBe(true);
    }
    expect(prefixEnd("a\ud7ff")).toBe("a\ue000");
    expect(prefixEnd("a\u{10ffff}")).toBe("b");
  });

  it("is null when nothing is above the keys: an empty prefix, or one of U+10FFFF only", () => {
    expect(prefixEnd("")).toBeNull();
    expect(prefixEnd("\u{10ffff}\u{10ffff}")).toBeNull();
  });
});
