import { describe, expect, it } from "vitest";
import { ConfigError } from "../../lib/config.ts";
import { parseFaultSpec } from "../../syncer/faults.ts";

describe("SYNC_FAULT_INJECTION", () => {
  it.each([
    ["after-commit:kill", { step: "after-commit", action: "kill", nth: 1 }],
    ["during-read:kill@3", { step: "during-read", action: "kill", nth: 3 }],
    ["after-swap:stall=250", { step: "after-swap", action: "stall", ms: 250 }],
    ["before-commit:freeze=900", { step: "before-commit", action: "freeze", ms: 900 }],
  ])("parses %s", (text, spec) => {
    expect(parseFaultSpec(text)).toEqual(spec);
  });

  it.each(["after-commit", "nowhere:kill", "after-swap:explode", "after-swap:stall", "kill@2"])(
    "rejects %s with a message naming the variable",
    (text) => {
      expect(() => parseFaultSpec(text)).toThrow(ConfigError);
      expect(() => parseFaultSpec(text)).toThrow(/SYNC_FAULT_INJECTION must be/);
    },
  );
});
