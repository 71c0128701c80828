import { readdir, readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { parse } from "acorn";
import { describe, expect, it } from "vitest";

// k6 before v0.53 compiled scripts with Babel 6, which knows ES2017 and nothing later: object spread,
// optional chaining or `??` in a script is a SyntaxError there, while the docs promise k6 v0.45. Every
// script must parse as ES2017 (k6 runs them as ES modules).

const K6_DIR = fileURLToPath(new URL("../../k6/", import.meta.url));
const scripts = (await readdir(K6_DIR)).filter((name) => name.endsWith(".js")).sort();

describe("k6 scripts", () => {
  it("are all checked", () => {
    expect(scripts).toEqual(
      expect.arrayContaining([
        "batch.js",
        "load.js",
        "mixed.js",
        "smoke.js",
        "soak.js",
        "spike.js",
        "stress.js",
        "verify.js",
        "lib.js",
        "jwt.js",
      ]),
    );
  });

  it.each(scripts)("%s parses as ES2017, what k6 v0.45 compiles", async (name) => {
    const source = await readFile(`${K6_DIR}${name}`, "utf8");
    expect(() => parse(source, { ecmaVersion: 2017, sourceType: "module" })).not.toThrow();
  });

  it("the check itself refuses what k6 v0.45 cannot compile", () => {
    for (const newer of ["const a = { ...b };", "const c = d?.e;", "const f = g ?? 1;"]) {
      expect(() => parse(newer, { ecmaVersion: 2017, sourceType: "module" }), newer).toThrow(SyntaxError);
    }
  });
});
