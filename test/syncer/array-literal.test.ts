import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { textArrayLiteral } from "../../syncer/array-literal.ts";
import { useSyncerEnv } from "../support/syncer.ts";

const env = useSyncerEnv();

async function parsedByPostgres(literal: string): Promise<string[]> {
  const { rows } = await env.pool.query<{ elements: string[] }>("SELECT $1::text[] AS elements", [literal]);
  return rows[0]?.elements ?? [];
}

// Any text Postgres can store (everything but NUL), with the characters array literals treat specially
// made likely.
const storableText = fc.oneof(
  fc.string({ unit: "binary" }).map((text) => text.replaceAll("\0", "")),
  fc
    .array(fc.constantFrom('"', "\\", ",", "{", "}", " ", "NULL", "a", "é", "🔑"), { maxLength: 8 })
    .map((pieces) => pieces.join("")),
);

describe("textArrayLiteral", () => {
  it("is read back by Postgres as exactly the values it was built from", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(storableText, { maxLength: 20 }), async (values) => {
        expect(await parsedByPostgres(textArrayLiteral(values))).toEqual(values);
      }),
      { numRuns: 300 },
    );
  });

  it("quotes every element, with or without a value that needs escaping", async () => {
    const mixed = ["plain", 'with "quotes"', "back\\slash", "", "NULL", "{a,b}"];
    const plainOnly = ["plain", "NULL", "x y", "{a,b}"];

    expect(await parsedByPostgres(textArrayLiteral(mixed))).toEqual(mixed);
    expect(await parsedByPostgres(textArrayLiteral(plainOnly))).toEqual(plainOnly);
  });
});
