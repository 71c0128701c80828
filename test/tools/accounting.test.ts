import { describe, expect, it } from "vitest";
import { Accounting } from "../../tools/load/increment.ts";

// The check every fault test ends with: is Postgres what the clients were told, resets included?

describe("Accounting", () => {
  it("holds a key to exactly what was accepted, give or take what is unknown", () => {
    const accounting = new Accounting();
    accounting.record("a", 5, "accepted");
    accounting.record("a", 7, "unknown");
    accounting.record("a", 100, "rejected");
    expect(accounting.violations(new Map([["a", 5n]]))).toEqual([]);
    expect(accounting.violations(new Map([["a", 12n]]))).toEqual([]);
    expect(accounting.violations(new Map([["a", 4n]]))).toEqual([
      "a: 4 in Postgres, but 5 was accepted (lost)",
    ]);
    expect(accounting.violations(new Map([["a", 13n]]))).toEqual([
      "a: 13 in Postgres, more than accepted 5 + unknown 7 (doubled)",
    ]);
    expect(
      accounting.violations(
        new Map([
          ["a", 5n],
          ["never", 1n],
        ]),
      ),
    ).toEqual(["never: in Postgres but never sent"]);
  });

  it("counts a reset key from its last accepted reset", () => {
    const accounting = new Accounting();
    accounting.record("r", 5, "accepted");
    accounting.recordReset("r", "accepted");
    accounting.record("r", 3, "accepted");
    accounting.recordReset("r", "rejected");
    accounting.record("r", 2, "accepted");
    expect(accounting.violations(new Map([["r", 5n]]))).toEqual([]);
    expect(accounting.violations(new Map([["r", 10n]]))).toHaveLength(1);
    expect(accounting.violations(new Map([["r", 2n]]))).toHaveLength(1);
    // Reset last: no row at all is right.
    accounting.recordReset("r", "accepted");
    expect(accounting.violations(new Map())).toEqual([]);
    expect(accounting.violations(new Map([["r", 5n]]))).toHaveLength(1);
  });

  it("lets a reset of unknown outcome have discarded what was accepted, but never add to it", () => {
    const accounting = new Accounting();
    accounting.record("r", 5, "accepted");
    accounting.recordReset("r", "unknown");
    accounting.record("r", 3, "accepted");
    expect(accounting.violations(new Map([["r", 0n]]))).toEqual([]);
    expect(accounting.violations(new Map([["r", 8n]]))).toEqual([]);
    expect(accounting.violations(new Map([["r", 9n]]))).toHaveLength(1);
  });
});
