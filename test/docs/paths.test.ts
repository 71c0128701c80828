import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { lineAt, splitCode } from "./markdown.ts";

// A reader who meets `syncer/flush-shard.ts` in the docs opens it. When the code moves on and the docs do
// not, that file is gone and the prose around it describes code that no longer exists; this test is what
// makes a rename update the docs in the same commit.

const REPO = fileURLToPath(new URL("../../", import.meta.url));
/** Built or written by runs, so absent from a clean checkout: named in the docs, never checked. */
const GENERATED = ["node_modules/", "dist/", "client/dist/", ".tmp/", "coverage/", "bench/results/"];
/** File names the docs may name on their own, without a folder, when one file in the repository has it. */
const NAMED_ALONE = /\.(?:ts|js|lua|sql|conf|ya?ml|json|sh)$/;

async function filesUnder(directory: string): Promise<string[]> {
  const entries = await readdir(path.join(REPO, directory), { withFileTypes: true });
  const files: string[] = [];
  for (const entry of entries) {
    const relative = directory === "" ? entry.name : `${directory}/${entry.name}`;
    if (entry.name === ".git" || GENERATED.some((prefix) => `${relative}/`.startsWith(prefix))) continue;
    if (entry.isDirectory()) files.push(`${relative}/`, ...(await filesUnder(relative)));
    else files.push(relative);
  }
  return files;
}

const REPOSITORY_FILES = await filesUnder("");

interface Repository {
  /** Every file, and every folder with a trailing slash, relative to the root. */
  files: readonly string[];
}

interface Named {
  name: string;
  line: number;
}

// A path in prose: segments joined by slashes, not part of a URL or of a longer word.
const PROSE_PATH = /(?<![\w./:@<-])\.?[\w-]+\/(?:[\w.*-]+\/)*[\w.*-]*/g;

/** What a document names that looks like a path or a file of the repository. */
function namesIn(markdown: string): Named[] {
  const { prose, spans } = splitCode(markdown);
  const fromProse = [...prose.matchAll(PROSE_PATH)].map((match) => ({
    name: match[0],
    line: lineAt(prose, match.index),
  }));
  return [...spans.map(({ text, line }) => ({ name: text, line })), ...fromProse];
}

const globToPattern = (glob: string) =>
  new RegExp(`^${glob.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^/]*")}$`);

/**
 * Why `name` does not resolve in `repository`, or undefined when it does or is not a repository path at all:
 * a path counts when its first segment is a top-level entry, a bare name when it ends like a source file.
 */
function problemWith(name: string, repository: Repository): string | undefined {
  // A line number, anchor or placeholder is not part of the file; an example with spaces or a URL is not one.
  const file = name.replace(/(?::\d+)+$/, "").replace(/#.*$/, "");
  if (/[\s<>{}$=]/.test(file) || /^[a-z][a-z0-9+.-]*:/i.test(file) || file.startsWith("/")) return undefined;
  if (GENERATED.some((prefix) => file.startsWith(prefix))) return undefined;
  const { files } = repository;
  if (file.includes("/")) {
    const top = `${file.split("/")[0]}/`;
    if (!files.includes(top)) return undefined;
    const pattern = globToPattern(file);
    return files.some((candidate) => pattern.test(candidate)) ? undefined : "no such path";
  }
  if (!NAMED_ALONE.test(file) || file.startsWith(".") || file.startsWith("*")) return undefined;
  const pattern = globToPattern(file);
  const found = files.filter((candidate) => pattern.test(path.posix.basename(candidate)));
  return found.length > 0 ? undefined : "no file of that name";
}

async function missingPaths(document: string): Promise<string[]> {
  const markdown = await readFile(path.join(REPO, document), "utf8");
  return namesIn(markdown).flatMap(({ name, line }) => {
    const problem = problemWith(name, { files: REPOSITORY_FILES });
    return problem === undefined ? [] : [`${document}:${line} ${name}: ${problem}`];
  });
}

describe("the path checker", () => {
  const repository: Repository = {
    files: ["api/", "api/app.ts", "lib/", "lib/redis/", "lib/redis/scripts/", "lib/redis/scripts/swap-4.lua"],
  };

  it("finds paths in code spans and in prose, not in code blocks or URLs", () => {
    const markdown = [
      "See `api/app.ts:12` and lib/redis/, then `swap-4.lua`.",
      "```sh",
      "cat api/gone.ts",
      "```",
      "Open http://127.0.0.1:3333/api/x and `<prefix>/api/x`.",
    ].join("\n");
    expect(namesIn(markdown).map(({ name }) => name)).toEqual([
      "api/app.ts:12",
      "swap-4.lua",
      "<prefix>/api/x",
      "lib/redis/",
    ]);
  });

  it("resolves paths, globs and bare file names, and reports the rest", () => {
    const problem = (name: string) => problemWith(name, repository);
    expect(problem("api/app.ts:12")).toBeUndefined();
    expect(problem("lib/redis/scripts/*.lua")).toBeUndefined();
    expect(problem("swap-4.lua")).toBeUndefined();
    expect(problem("api/store/increment.ts")).toBe("no such path");
    expect(problem("lib/redis/scripts/*.sql")).toBe("no such path");
    expect(problem("swap.lua")).toBe("no file of that name");
  });

  it("leaves alone what is not a path of the repository", () => {
    const problem = (name: string) => problemWith(name, repository);
    for (const name of [
      "application/problem+json",
      "/readyz",
      "redis://x/0",
      "<n>/api/x",
      "dist/x.js",
      "a b/c",
    ]) {
      expect(problem(name), name).toBeUndefined();
    }
  });
});

const DOCUMENTS = [
  "README.md",
  "POSTMORTEM.md",
  ...(await readdir(path.join(REPO, "docs")))
    .filter((name) => name.endsWith(".md"))
    .map((name) => `docs/${name}`),
];

describe("paths named in the documentation", () => {
  it.each(DOCUMENTS)("every path %s names exists", async (document) => {
    expect(await missingPaths(document)).toEqual([]);
  });
});
