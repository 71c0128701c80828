import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { persistedKeysQuery } from "../../../api/store/counter-listing.ts";
import { migrate } from "../../../lib/postgres/migrate.ts";
import { freshDatabase } from "../../harness/fixtures.ts";

// A listing page must cost the same on ten million counters as on ten: one range scan of the primary key that
// stops at the prefix's end, in code point order, whatever collation the user's database was created with.

interface PlanNode {
  "Node Type": string;
  "Index Name"?: string;
  "Index Cond"?: string;
  Plans?: PlanNode[];
}

const nodesOf = (node: PlanNode): PlanNode[] => [node, ...(node.Plans ?? []).flatMap(nodesOf)];

describe.each([
  ["created with the default (C) collation", {}],
  ["created with an ICU en-US collation", { icuLocale: "en-US" }],
])("the listing query on a database %s", (_name, options) => {
  let database: Awaited<ReturnType<typeof freshDatabase>>;
  let pool: pg.Pool;
  beforeAll(async () => {
    database = await freshDatabase(options);
    pool = new pg.Pool({ connectionString: database.url, max: 1 });
    await migrate(pool);
    // Many keys around the listed prefix, so that a scan that does not stop at the prefix's end would show.
    await pool.query(`
      INSERT INTO counters (key, value, updated_at)
      SELECT p || lpad(i::text, 6, '0'), i, now()
        FROM generate_series(1, 50000) i, unnest(ARRAY['team-a:', 'team-b:', 'team-c:']) p`);
    await pool.query(
      "INSERT INTO counters (key, value, updated_at) VALUES ('a-b', 1, now()), ('ab', 1, now()), ('aB', 1, now()), ('a b', 1, now())",
    );
    await pool.query("ANALYZE counters");
  }, 120_000);
  afterAll(async () => {
    await pool?.end();
    await database?.drop();
  });

  it.each([
    ["a first page", { prefix: "team-b:", after: null, limit: 100 }],
    ["a later page", { prefix: "team-b:", after: "team-b:020000", limit: 1000 }],
    ["every key", { prefix: "", after: "team-a:040000", limit: 100 }],
  ])("reads %s as one bounded range scan of the primary key, with no sort", async (_page, query) => {
    const { text, values } = persistedKeysQuery(query);
    const { rows } = await pool.query<{ "QUERY PLAN": [{ Plan: PlanNode }] }>(
      `EXPLAIN (FORMAT JSON) ${text}`,
      values,
    );
    const nodes = nodesOf(rows[0]?.["QUERY PLAN"][0].Plan as PlanNode);
    expect(nodes.map((node) => node["Node Type"])).toEqual(["Limit", "Index Only Scan"]);
    const scan = nodes[1];
    expect(scan?.["Index Name"]).toBe("counters_pkey");
    expect(scan?.["Index Cond"]).toContain(query.after === null ? "key >=" : "key >");
    if (query.prefix !== "") expect(scan?.["Index Cond"]).toContain("key <");
  });

  it("orders keys by code point, not by the database's collation", async () => {
    const { text, values } = persistedKeysQuery({ prefix: "a", after: null, limit: 10 });
    const { rows } = await pool.query<{ key: string }>(text, values);
    expect(rows.map((row) => row.key)).toEqual(["a b", "a-b", "aB", "ab"]);
  });
});
