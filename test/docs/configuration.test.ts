import { readFile } from "node:fs/promises";
import * as v from "valibot";
import { describe, expect, it } from "vitest";
import { SETTINGS } from "../../lib/settings.ts";

// lib/settings.ts is the one statement of every setting; docs/configuration.md describes them for people.
// This test reads the schema's own defaults and bounds and fails when the tables say otherwise, so a changed
// default or a new variable cannot land without its documentation.

/** What the schema says about one variable, as the docs' columns state it. */
interface Stated {
  /** The default as set in the environment; "computed" when it is worked out at start-up. */
  fallback: string | "computed" | undefined;
  min?: number;
  max?: number;
  /** The values a picklist or literal accepts. */
  choices: string[];
}

interface SchemaNode {
  type: string;
  wrapped?: unknown;
  default?: unknown;
  pipe?: readonly unknown[];
  options?: readonly unknown[];
  literal?: unknown;
  requirement?: unknown;
}

const isNode = (value: unknown): value is SchemaNode =>
  typeof value === "object" && value !== null && typeof (value as { type?: unknown }).type === "string";

/** Walks one variable's schema: optional wrappers, pipes, unions, and the actions that bound a number. */
function stated(schema: unknown, into: Stated = { fallback: undefined, choices: [] }): Stated {
  if (!isNode(schema)) return into;
  if (schema.type === "optional" && schema.default !== undefined) {
    into.fallback = typeof schema.default === "function" ? "computed" : String(schema.default);
  }
  if (schema.type === "min_value" && typeof schema.requirement === "number") into.min = schema.requirement;
  if (schema.type === "max_value" && typeof schema.requirement === "number") into.max = schema.requirement;
  if (schema.type === "literal") into.choices.push(String(schema.literal));
  if (schema.type === "picklist") into.choices.push(...(schema.options ?? []).map(String));
  if (schema.type === "union") for (const option of schema.options ?? []) stated(option, into);
  stated(schema.wrapped, into);
  for (const step of schema.pipe ?? []) if (step !== schema) stated(step, into);
  return into;
}

interface Row {
  name: string;
  defaultCell: string;
  rangeCell: string;
}

/** The rows of the document's variable tables: `| \`NAME\`[, \`NAME\`] | default | range | meaning |`. */
function variableRows(markdown: string): Row[] {
  const rows: Row[] = [];
  for (const line of markdown.split("\n")) {
    if (!line.startsWith("| `")) continue;
    const [, names = "", defaultCell = "", rangeCell = ""] = line.split("|").map((cell) => cell.trim());
    for (const match of names.matchAll(/`([A-Z][A-Z0-9_]*)`/g)) {
      if (match[1] !== undefined) rows.push({ name: match[1], defaultCell, rangeCell });
    }
  }
  return rows;
}

const FLAG_WORDS = ["true", "false", "1", "0", "yes", "no"];
const PLAIN_LITERAL = /^`[^`<]*`$/;

/** How a row and the schema's statement of its variable disagree, one line each. */
function disagreements(name: string, schema: Stated, row: Row): string[] {
  const found: string[] = [];
  const { fallback, min, max, choices } = schema;
  if (fallback === undefined || fallback === "computed") {
    if (PLAIN_LITERAL.test(row.defaultCell))
      found.push(`${name}: the docs give a default, the schema has none`);
  } else if (!row.defaultCell.startsWith(`\`${fallback}\``)) {
    found.push(`${name}: default is \`${fallback}\`, the docs say ${row.defaultCell}`);
  }
  const isFlag = choices.length === FLAG_WORDS.length && FLAG_WORDS.every((word) => choices.includes(word));
  if (isFlag) {
    if (row.rangeCell !== "flag") found.push(`${name}: a flag, the docs say ${row.rangeCell}`);
    return found;
  }
  for (const choice of choices) {
    if (!row.rangeCell.includes(`\`${choice}\``))
      found.push(`${name}: accepts \`${choice}\`, not in the docs`);
  }
  if (min !== undefined && max !== undefined && max < Number.MAX_SAFE_INTEGER) {
    if (!row.rangeCell.includes(`${min}–${max}`))
      found.push(`${name}: range is ${min}–${max}, the docs say ${row.rangeCell}`);
  } else if (min !== undefined && !row.rangeCell.includes(`at least ${min}`)) {
    found.push(`${name}: range is at least ${min}, the docs say ${row.rangeCell}`);
  }
  return found;
}

function compare(entries: Record<string, unknown>, rows: Row[]): string[] {
  const byName = new Map(rows.map((row) => [row.name, row]));
  const found: string[] = [];
  for (const [name, schema] of Object.entries(entries)) {
    const row = byName.get(name);
    if (row === undefined) found.push(`${name}: in the schema, not in the docs`);
    else found.push(...disagreements(name, stated(schema), row));
  }
  for (const { name } of rows) if (!(name in entries)) found.push(`${name}: in the docs, not in the schema`);
  return found;
}

describe("the settings comparison", () => {
  const entries = {
    PORT: v.optional(v.pipe(v.string(), v.transform(Number), v.minValue(0), v.maxValue(65535)), "3333"),
    LEVEL: v.optional(v.picklist(["info", "debug"]), "info"),
    SECRET: v.optional(v.string()),
    CORES: v.optional(v.string(), () => "8"),
  };
  const row = (name: string, defaultCell: string, rangeCell: string) => ({ name, defaultCell, rangeCell });
  const agreeing = [
    row("PORT", "`3333`", "0–65535"),
    row("LEVEL", "`info`", "`info`, `debug`"),
    row("SECRET", "—", "non-empty"),
    row("CORES", "the number of cores", "a number"),
  ];

  it("accepts tables that say what the schema says", () => {
    expect(compare(entries, agreeing)).toEqual([]);
  });

  it("reports a wrong default, range or choice, and a variable on one side only", () => {
    const [port, level, , cores] = agreeing;
    expect(
      compare(entries, [
        { ...(port as Row), defaultCell: "`8080`", rangeCell: "1–65535" },
        { ...(level as Row), rangeCell: "`info`" },
        { ...(cores as Row), defaultCell: "`8`" },
        row("GONE", "`1`", "1–2"),
      ]),
    ).toEqual([
      "PORT: default is `3333`, the docs say `8080`",
      "PORT: range is 0–65535, the docs say 1–65535",
      "LEVEL: accepts `debug`, not in the docs",
      "SECRET: in the schema, not in the docs",
      "CORES: the docs give a default, the schema has none",
      "GONE: in the docs, not in the schema",
    ]);
  });
});

describe("docs/configuration.md", () => {
  it("states every setting of lib/settings.ts with its default and range, and no other", async () => {
    const markdown = await readFile(new URL("../../docs/configuration.md", import.meta.url), "utf8");
    const rows = variableRows(markdown);
    expect(rows.length).toBeGreaterThan(0);
    expect(compare(SETTINGS.entries, rows)).toEqual([]);
  });
});
