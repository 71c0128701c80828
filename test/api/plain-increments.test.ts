import fc from "fast-check";
import * as v from "valibot";
import { describe, expect, it } from "vitest";
import { incrementBodySchema } from "../../api/operations/increment.ts";
import { incrementsBodySchema } from "../../api/operations/increments.ts";
import { isPlainBatch, isPlainIncrement } from "../../api/schemas.ts";
import { MAX_KEY_BYTES } from "../../lib/settings.ts";

// The one-pass check that lets the common increment skip valibot must never accept what valibot refuses,
// and must hand valibot's own output back. Inputs are generated around every rule's edge, through JSON, as
// a request body arrives.

const MAX_KEY_LENGTH = 256;
const MAX_BATCH_SIZE = 5;

const keys = fc.oneof(
  fc.string({ unit: "grapheme", maxLength: 8 }),
  fc.string({ unit: "binary", maxLength: 8 }),
  fc.constantFrom("", "\u0000", "a\u0000b", "\ud800", "x\udfff", "😀", "é", "e\u0301", "__proto__"),
  // Either side of MAX_KEY_LENGTH, in one-, three- and four-byte characters.
  fc
    .constantFrom("a", "€", "😀")
    .chain((unit) =>
      fc.integer({ min: MAX_KEY_LENGTH - 2, max: MAX_KEY_LENGTH + 2 }).map((count) => unit.repeat(count)),
    ),
  fc.anything(),
);
const values = fc.oneof(
  fc.integer(),
  fc.constantFrom(0, -0, 1.5, 2 ** 53 - 1, -(2 ** 53 - 1), 2 ** 53, -(2 ** 53), 1e21, "1", true, null),
  fc.double(),
  fc.anything(),
);
const increments = fc.oneof(
  fc.record({ key: keys, value: values }),
  fc.record({ key: keys, value: values }, { requiredKeys: [] }),
  fc.record({ key: keys, value: values, vaule: values }),
  fc.record({ key: keys, value: values, __proto__: values }),
  fc.anything(),
);
const batches = fc.oneof(
  fc.record({ increments: fc.array(increments, { maxLength: MAX_BATCH_SIZE + 1 }) }),
  fc.record({ increments: fc.array(increments), other: fc.anything() }, { requiredKeys: ["increments"] }),
  fc.array(increments),
  fc.anything(),
);

/** As a request body arrives: what survives JSON. */
const asReceived = (input: unknown): unknown => {
  const text = JSON.stringify(input);
  return text === undefined ? undefined : JSON.parse(text);
};

describe("the fast path past valibot", () => {
  const single = incrementBodySchema(MAX_KEY_LENGTH);
  const batch = incrementsBodySchema(MAX_KEY_LENGTH, MAX_BATCH_SIZE);

  it("accepts a single increment only when valibot accepts it, and as valibot returns it", () => {
    fc.assert(
      fc.property(increments, (generated) => {
        const body = asReceived(generated);
        if (!isPlainIncrement(body, MAX_KEY_LENGTH)) return;
        const parsed = v.safeParse(single, body);
        expect(parsed.success).toBe(true);
        expect(parsed.output).toEqual(body);
      }),
      { numRuns: 5_000 },
    );
  });

  it("accepts a batch only when valibot accepts it, and as valibot returns it", () => {
    fc.assert(
      fc.property(batches, (generated) => {
        const body = asReceived(generated);
        if (!isPlainBatch(body, MAX_KEY_LENGTH, MAX_BATCH_SIZE)) return;
        const parsed = v.safeParse(batch, body);
        expect(parsed.success).toBe(true);
        expect(parsed.output).toEqual(body);
      }),
      { numRuns: 5_000 },
    );
  });

  it("takes the common increment and batch, so the fast path is the one taken", () => {
    expect(isPlainIncrement({ key: "page:home", value: 1 }, MAX_KEY_LENGTH)).toBe(true);
    expect(
      isPlainIncrement({ key: "😀".repeat(MAX_KEY_LENGTH / 2), value: -(2 ** 53 - 1) }, MAX_KEY_LENGTH),
    ).toBe(true);
    const full = {
      increments: Array.from({ length: MAX_BATCH_SIZE }, (_, i) => ({ key: `k${i}`, value: i })),
    };
    expect(isPlainBatch(full, MAX_KEY_LENGTH, MAX_BATCH_SIZE)).toBe(true);
  });

  it("leaves to valibot each case whose wording or counting is valibot's", () => {
    const refused: unknown[] = [
      { key: "a" },
      { key: "a", value: 1, vaule: 1 },
      { key: "", value: 1 },
      { key: "a\u0000", value: 1 },
      { key: "\ud800", value: 1 },
      { key: "a", value: 1.5 },
      { key: "a", value: 2 ** 53 },
      { key: 1, value: 1 },
      [{ key: "a", value: 1 }],
      // Within the bounds, but only a count tells: valibot counts.
      { key: "a".repeat(MAX_KEY_LENGTH + 1), value: 1 },
      { key: "€".repeat(Math.floor(MAX_KEY_BYTES / 3) + 1), value: 1 },
    ];
    for (const body of refused) expect(isPlainIncrement(body, MAX_KEY_LENGTH)).toBe(false);
    expect(isPlainBatch({ increments: [] }, MAX_KEY_LENGTH, MAX_BATCH_SIZE)).toBe(false);
    expect(
      isPlainBatch(
        { increments: Array.from({ length: MAX_BATCH_SIZE + 1 }, () => ({ key: "k", value: 1 })) },
        MAX_KEY_LENGTH,
        MAX_BATCH_SIZE,
      ),
    ).toBe(false);
    expect(
      isPlainBatch({ increments: [{ key: "k", value: 1 }], extra: 1 }, MAX_KEY_LENGTH, MAX_BATCH_SIZE),
    ).toBe(false);
  });
});
