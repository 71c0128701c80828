import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestApi, readProblem, type TestApi } from "../support/api.ts";

let api: TestApi;
let token: string;
beforeAll(async () => {
  api = await createTestApi({ SYNC_SHARDS: "4", RATE_LIMIT_POINTS: "100000" });
  token = await api.token();
});
afterAll(() => api.close());

interface Page {
  counters: { key: string; persisted: number; pending: number; total: number }[];
  nextCursor: string | null;
}

const list = (query: string, bearer = token) =>
  api.node.app.request(`/counters?${query}`, { headers: { authorization: `Bearer ${bearer}` } });

async function listAll(prefix: string, limit: number): Promise<{ pages: Page[]; keys: string[] }> {
  const pages: Page[] = [];
  let cursor: string | null = null;
  do {
    const query = new URLSearchParams({ prefix, limit: String(limit) });
    if (cursor !== null) query.set("cursor", cursor);
    const response = await list(query.toString());
    expect(response.status).toBe(200);
    const page = (await response.json()) as Page;
    pages.push(page);
    cursor = page.nextCursor;
  } while (cursor !== null);
  return { pages, keys: pages.flatMap((page) => page.counters.map((counter) => counter.key)) };
}

async function persist(entries: [string, number][]): Promise<void> {
  for (const [key, value] of entries)
    await api.node.pool.query("INSERT INTO counters (key, value, updated_at) VALUES ($1, $2, now())", [
      key,
      value,
    ]);
}

describe("GET /counters", () => {
  it("lists keys in Postgres and keys only Redis holds, in code point order, page by page", async () => {
    await persist([
      ["list:b", 10],
      ["list:d", 20],
      ["list:\ufffd", 1],
      ["list;", 99],
      ["List:a", 99],
    ]);
    for (const [key, value] of [
      ["list:", 1],
      ["list:a", 1],
      ["list:d", 2],
      ["list:🦄", 3],
      ["list:c", 4],
    ] as const)
      expect((await api.increment({ key, value }, token)).status).toBe(202);

    const { pages, keys } = await listAll("list:", 2);

    // JavaScript's sort would put the emoji before U+FFFD; Postgres' "C" order and the listing do not.
    expect(keys).toEqual(["list:", "list:a", "list:b", "list:c", "list:d", "list:\ufffd", "list:🦄"]);
    expect(pages.map((page) => page.counters.length)).toEqual([2, 2, 2, 1]);
    const d = pages.flatMap((page) => page.counters).find((counter) => counter.key === "list:d");
    expect(d).toMatchObject({ persisted: 20, pending: 2, total: 22 });
  });

  it("lists every key under an empty prefix, and none under a prefix nothing starts with", async () => {
    const { keys } = await listAll("", 1000);
    expect(keys).toEqual(expect.arrayContaining(["List:a", "list;", "list:b"]));
    expect((await listAll("nothing-here:", 10)).keys).toEqual([]);
  });

  it("treats *, ?, [, %, _ and \\ in the prefix as themselves, in Redis and in Postgres", async () => {
    await persist([
      ["p*x", 1],
      ["pax", 1],
      ["p%y", 1],
      ["pby", 1],
    ]);
    for (const key of ["p*z", "paz", "p?z", "p[z", "p_z", "p\\z"])
      expect((await api.increment({ key, value: 1 }, token)).status).toBe(202);

    for (const [prefix, expected] of [
      ["p*", ["p*x", "p*z"]],
      ["p?", ["p?z"]],
      ["p[", ["p[z"]],
      ["p%", ["p%y"]],
      ["p_", ["p_z"]],
      ["p\\", ["p\\z"]],
    ] as const)
      expect((await listAll(prefix, 10)).keys, prefix).toEqual(expected);
  });

  it("refuses a bad limit, a repeated or unknown parameter and a cursor it did not give, saying why", async () => {
    const { pages } = await listAll("list:", 2);
    const cursor = pages[0]?.nextCursor ?? "";
    for (const [query, detail] of [
      ["limit=0", "limit must be an integer from 1 to 1000"],
      ["limit=1001", "limit must be an integer from 1 to 1000"],
      ["limit=1.5", "limit must be an integer from 1 to 1000"],
      ["prefix=a&prefix=b", "prefix must be given once"],
      ["prefx=a", 'unknown query parameter "prefx": there are prefix, limit and cursor'],
      ["prefix=a%00", "prefix must not contain the NUL character"],
      [`prefix=other:&cursor=${cursor}`, "cursor is not one a listing with this prefix answered"],
      ["cursor=%%%", "cursor is not one a listing with this prefix answered"],
      ["cursor=_w", "cursor is not one a listing with this prefix answered"],
    ] as const) {
      const response = await list(query);
      expect(response.status, query).toBe(400);
      expect(await readProblem(response), query).toMatchObject({ code: "invalid_query", detail });
    }
  });

  it("lists only under a prefix inside a confined token's prefixes", async () => {
    const confined = await api.token({ prefixes: ["list:"] });
    expect((await list("prefix=list:b", confined)).status).toBe(200);
    for (const prefix of ["", "list", "List:", "list;"]) {
      const response = await list(`prefix=${encodeURIComponent(prefix)}`, confined);
      expect(response.status, prefix).toBe(403);
      expect((await readProblem(response)).code).toBe("namespace_forbidden");
    }
  });
});
