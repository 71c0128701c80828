import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { lineAt, splitCode } from "./markdown.ts";

// The README is the front door of every clone, so it may only point into the repository: a link to a
// sibling checkout or a web page breaks or drifts where the reader cannot see it. The docs may link anywhere,
// but their links into the repository must resolve, or a reader following one meets a 404.

const REPO = fileURLToPath(new URL("../../", import.meta.url));
const README = "README.md";
const MAX_README_LINES = 300;
const readme = await readFile(path.join(REPO, README), "utf8");
const DOCS = (await readdir(path.join(REPO, "docs")))
  .filter((name) => name.endsWith(".md"))
  .sort()
  .map((name) => `docs/${name}`);

interface Link {
  target: string;
  line: number;
}

// [text](target "title") and ![alt](target), the target bare or in <…>; and [label]: target.
const INLINE_LINK = /!?\[[^\]]*\]\(\s*(?:<([^>\n]*)>|([^\s)]*))(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)/g;
const REFERENCE_DEFINITION = /^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?/gm;

/** Every link target in the prose of a markdown document, with the line it is on. */
function linksIn(markdown: string): Link[] {
  const { prose } = splitCode(markdown);
  const links: Link[] = [];
  for (const pattern of [INLINE_LINK, REFERENCE_DEFINITION]) {
    for (const match of prose.matchAll(pattern)) {
      links.push({ target: match[1] ?? match[2] ?? "", line: lineAt(prose, match.index) });
    }
  }
  return links.sort((a, b) => a.line - b.line);
}

const hasScheme = (target: string) => /^[a-z][a-z0-9+.-]*:/i.test(target);

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

/**
 * The links of `file` (relative to the repository) that should point into the repository and do not: a
 * missing file, an absolute path, or a path that climbs out of the repository. Anchors are not checked.
 */
async function brokenLinks(file: string): Promise<string[]> {
  const markdown = await readFile(path.join(REPO, file), "utf8");
  const broken: string[] = [];
  for (const { target, line } of linksIn(markdown)) {
    if (hasScheme(target) || target.startsWith("#")) continue;
    const where = `${file}:${line} ${target}`;
    const filePart = decodeURIComponent(target.replace(/[#?].*$/, ""));
    if (filePart === "") {
      broken.push(`${where}: empty link`);
      continue;
    }
    if (filePart.startsWith("/")) {
      broken.push(`${where}: absolute path; link relative to the file instead`);
      continue;
    }
    const resolved = path.resolve(path.dirname(path.join(REPO, file)), filePart);
    const inRepository = path.relative(REPO, resolved);
    if (inRepository.startsWith("..") || path.isAbsolute(inRepository)) {
      broken.push(`${where}: leaves the repository`);
    } else if (!(await exists(resolved))) {
      broken.push(`${where}: no such file`);
    }
  }
  return broken;
}

const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);
const URL_PATTERN = /\bhttps?:\/\/[^\s"'`)<>\]]*/gi;

/** URLs in the README that lead out of the repository: any in prose, and any not on this host in code. */
function outboundUrls(markdown: string): string[] {
  const { prose, code } = splitCode(markdown);
  const found = [...prose.matchAll(URL_PATTERN)].map(
    (match) => `line ${lineAt(prose, match.index)}: ${match[0]}`,
  );
  for (const match of code.matchAll(URL_PATTERN)) {
    let host: string;
    try {
      host = new URL(match[0]).hostname;
    } catch {
      host = "";
    }
    if (!LOOPBACK_HOSTS.has(host)) found.push(`code: ${match[0]}`);
  }
  return found;
}

describe("the link checker", () => {
  it("finds inline, image and reference links, and none in code", () => {
    const markdown = [
      "See [the API](docs/api.md#errors) and ![chart](img/a.svg 'title').",
      "`[not a link](nowhere.md)` and [`code`](<docs/x y.md>)",
      "```sh",
      "[not a link](nowhere.md) http://example.com",
      "```",
      "[ref]: ../up.md",
    ].join("\n");
    expect(linksIn(markdown)).toEqual([
      { target: "docs/api.md#errors", line: 1 },
      { target: "img/a.svg", line: 1 },
      { target: "docs/x y.md", line: 2 },
      { target: "../up.md", line: 6 },
    ]);
    expect(outboundUrls(markdown)).toEqual(["code: http://example.com"]);
  });

  it("allows loopback URLs in code only", () => {
    expect(outboundUrls("```\ncurl http://127.0.0.1:3333/healthz\n```\n`http://localhost:3333`")).toEqual([]);
    expect(outboundUrls("Open http://localhost:3333 now.")).toEqual(["line 1: http://localhost:3333"]);
  });
});

describe("documentation links", () => {
  it("covers the docs folder", () => {
    expect(DOCS.length).toBeGreaterThan(0);
  });

  it.each([README, ...DOCS])("every relative link in %s points to a file in the repository", async (file) => {
    expect(await brokenLinks(file)).toEqual([]);
  });
});

describe("README.md", () => {
  it("links only into the repository", () => {
    const outside = linksIn(readme).filter(
      ({ target }) => hasScheme(target) || target.startsWith("../") || target.startsWith("/"),
    );
    expect(outside).toEqual([]);
  });

  it("has no URL that leaves the repository", () => {
    expect(outboundUrls(readme)).toEqual([]);
  });

  it(`is under ${MAX_README_LINES} lines`, () => {
    const lines = readme.endsWith("\n") ? readme.split("\n").length - 1 : readme.split("\n").length;
    expect(lines).toBeLessThan(MAX_README_LINES);
  });
});
