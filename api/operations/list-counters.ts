import * as v from "valibot";
import { ApiError } from "../errors.ts";
import { chargeRest } from "../middleware/rate-limit/index.ts";
import { checkListingPrefix } from "../namespaces.ts";
import type { Operation } from "../operation.ts";
import { respond } from "../respond.ts";
import type { CounterLister } from "../store/counter-listing.ts";
import { parseOrThrow } from "../validation.ts";
import { counterJson, READ_PROBLEMS, readOrThrow } from "./readings.ts";

/** The most counters one page may hold; each is read in every shard and in Postgres. */
export const MAX_PAGE_SIZE = 1_000;
export const DEFAULT_PAGE_SIZE = 100;

export interface ListCountersOptions {
  listCounters: CounterLister;
  maxKeyLength: number;
}

function listingQuerySchema(maxKeyLength: number) {
  const once = (name: string) => (issue: v.BaseIssue<unknown>) =>
    Array.isArray(issue.input) ? `${name} must be given once` : `${name} must be a string`;
  return v.strictObject(
    {
      prefix: v.optional(
        v.pipe(
          v.string(once("prefix")),
          v.maxCodePoints(maxKeyLength, `prefix must be at most ${maxKeyLength} characters`),
          v.check((prefix) => !prefix.includes("\u0000"), "prefix must not contain the NUL character"),
        ),
        "",
      ),
      limit: v.optional(
        v.pipe(
          v.string(once("limit")),
          v.regex(/^[1-9][0-9]{0,3}$/, `limit must be an integer from 1 to ${MAX_PAGE_SIZE}`),
          v.transform(Number),
          v.maxValue(MAX_PAGE_SIZE, `limit must be an integer from 1 to ${MAX_PAGE_SIZE}`),
        ),
        String(DEFAULT_PAGE_SIZE),
      ),
      cursor: v.optional(v.string(once("cursor"))),
    },
    (issue) =>
      `unknown query parameter ${JSON.stringify(issue.path?.at(-1)?.key)}: there are prefix, limit and cursor`,
  );
}

// The cursor is the page's last key, opaque to clients so that it may change form later.
const encodeCursor = (key: string) => Buffer.from(key, "utf8").toString("base64url");

function decodeCursor(cursor: string, prefix: string): string {
  const key = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(
    Buffer.from(cursor, "base64url"),
  );
  // Node decodes base64url leniently: only the canonical form of a key is a cursor this API gave.
  if (encodeCursor(key) !== cursor || !key.startsWith(prefix) || key.includes("\u0000")) throw new Error();
  return key;
}

/** GET /counters: the counters under a prefix, in key order, a page at a time. */
export function listCountersOperation(options: ListCountersOptions): Operation {
  const querySchema = listingQuerySchema(options.maxKeyLength);
  return {
    id: "listCounters",
    method: "GET",
    path: "/counters",
    scope: "counters:read",
    problems: ["invalid_query", ...READ_PROBLEMS],
    async handler(c) {
      // A parameter given twice arrives as a list, which the schema refuses.
      const given = Object.entries(c.req.queries()).map(([name, values]) => [
        name,
        values.length === 1 ? values[0] : values,
      ]);
      const { prefix, limit, cursor } = parseOrThrow(querySchema, Object.fromEntries(given), "invalid_query");
      checkListingPrefix(c.get("client"), prefix);
      let after: string | null = null;
      if (cursor !== undefined) {
        try {
          after = decodeCursor(cursor, prefix);
        } catch {
          throw new ApiError("invalid_query", "cursor is not one a listing with this prefix answered");
        }
      }
      await chargeRest(c, limit - 1);
      const page = await readOrThrow(() => options.listCounters({ prefix, after, limit }));
      const next = page.lastKey === null ? "null" : JSON.stringify(encodeCursor(page.lastKey));
      const json = `{"counters":[${page.counters.map(counterJson).join(",")}],"nextCursor":${next}}`;
      return respond(c, 200, json, { "content-type": "application/json" });
    },
    doc: {
      summary: "List counters under a prefix, in key order",
      description: `Keys in Unicode code point order (the order of their UTF-8 bytes), each answered as GET /counters/{key} answers it; keys only Redis holds so far are listed too. A page looks at \`limit\` keys and leaves out those reset since they were last counted, so it may hold fewer while more follow: page on until nextCursor is null. Keys counted while you page appear if they sort after the cursor. Spends \`limit\` points of the client's quota. A token confined to prefixes lists only under a prefix that starts with one of them.`,
      parameters: [
        {
          name: "prefix",
          in: "query",
          required: false,
          description:
            "List the keys that start with it (compared code unit by code unit, no pattern characters); empty or absent lists every key.",
          schema: { type: "string", maxLength: options.maxKeyLength, default: "" },
        },
        {
          name: "limit",
          in: "query",
          required: false,
          description: "How many keys the page looks at.",
          schema: { type: "integer", minimum: 1, maximum: MAX_PAGE_SIZE, default: DEFAULT_PAGE_SIZE },
        },
        {
          name: "cursor",
          in: "query",
          required: false,
          description: "The nextCursor of the page before, with the same prefix; absent for the first page.",
          schema: { type: "string" },
        },
      ],
      responses: {
        "200": {
          description: "A page of counters.",
          content: { "application/json": { schema: { $ref: "#/components/schemas/CounterPage" } } },
        },
      },
      components: {
        schemas: {
          CounterPage: {
            type: "object",
            required: ["counters", "nextCursor"],
            properties: {
              counters: { type: "array", items: { $ref: "#/components/schemas/CounterReading" } },
              nextCursor: {
                type: ["string", "null"],
                description: "Pass it as cursor for the next page; null on the last page.",
              },
            },
          },
        },
      },
    },
  };
}
