import * as v from "valibot";
import { readJsonBody } from "../body.ts";
import { chargeRest } from "../middleware/rate-limit/index.ts";
import { checkKeys } from "../namespaces.ts";
import { describeProperties, jsonSchemaOf } from "../openapi/json-schema.ts";
import type { Operation } from "../operation.ts";
import { respond } from "../respond.ts";
import { bodyIsNotAnArray, counterKeyRules, counterKeySchema } from "../schemas.ts";
import type { CounterReader } from "../store/counter-readings.ts";
import { parseOrThrow } from "../validation.ts";
import { counterJson, READ_PROBLEMS, readOrThrow } from "./readings.ts";

/** Most keys one POST /read may name: each is read in every shard and in Postgres, within one request. */
export const MAX_READ_KEYS = 1_000;

export interface ReadCountersOptions {
  readCounter: CounterReader;
  maxKeyLength: number;
}

export function readCountersBodySchema(maxKeyLength: number) {
  return v.pipe(
    v.unknown(),
    bodyIsNotAnArray,
    v.strictObject(
      {
        keys: v.pipe(
          v.array(counterKeySchema(maxKeyLength), (issue) =>
            issue.input === undefined ? "keys is required" : "keys must be an array",
          ),
          v.minLength(1, "keys must hold at least one key"),
          v.maxLength(MAX_READ_KEYS, `keys must hold at most ${MAX_READ_KEYS} keys`),
        ),
      },
      (issue) => {
        if (!issue.path) return "the body must be a JSON object";
        const field = issue.path.at(-1)?.key;
        if (issue.input === undefined && field === "keys") return "keys is required";
        return `unexpected field ${JSON.stringify(field)}: the body has only keys`;
      },
    ),
  );
}

/** POST /read: many counters in one request, each read as GET /counters/{key} reads it. */
export function readCountersOperation(options: ReadCountersOptions): Operation {
  const { maxKeyLength } = options;
  // Every key at MAX_KEY_LENGTH characters, each a six-byte JSON escape, with its quotes and comma.
  const bodyLimitBytes = 64 + MAX_READ_KEYS * (maxKeyLength * 6 + 4);
  const bodySchema = readCountersBodySchema(maxKeyLength);
  return {
    id: "readCounters",
    method: "POST",
    path: "/read",
    scope: "counters:read",
    bodyLimitBytes,
    problems: ["invalid_body", ...READ_PROBLEMS],
    async handler(c) {
      const { keys } = parseOrThrow(bodySchema, await readJsonBody(c, bodyLimitBytes), "invalid_body");
      checkKeys(c.get("client"), keys, (index) => `/keys/${index}`);
      await chargeRest(c, keys.length - 1);
      const readings = await readOrThrow(() => options.readCounter(keys));
      const json = `{"counters":[${readings.map(counterJson).join(",")}]}`;
      return respond(c, 200, json, { "content-type": "application/json" });
    },
    doc: {
      summary: "Read many counters at once",
      description: `1 to ${MAX_READ_KEYS} keys, each answered as GET /counters/{key} answers it, in the order asked (a key asked twice is answered twice). A key nothing counts for is answered with zeros, not an error. Each key's reading is consistent on its own; keys in different shards are read moments apart. Each key spends one point of the client's quota. One key outside the token's prefixes refuses the whole request.`,
      parameters: [],
      requestBody: {
        description: `Read as JSON whatever the Content-Type says; at most ${bodyLimitBytes} bytes, else 413.`,
        required: true,
        content: { "application/json": { schema: { $ref: "#/components/schemas/ReadCountersBody" } } },
      },
      responses: {
        "200": {
          description: "The counters, in the order asked.",
          content: { "application/json": { schema: { $ref: "#/components/schemas/CounterReadings" } } },
        },
      },
      components: {
        schemas: {
          ReadCountersBody: describeProperties(jsonSchemaOf(bodySchema, "The counters to read."), {
            keys: `Each: ${counterKeyRules(maxKeyLength)}`,
          }),
          CounterReadings: {
            type: "object",
            required: ["counters"],
            properties: {
              counters: { type: "array", items: { $ref: "#/components/schemas/CounterReading" } },
            },
          },
        },
      },
    },
  };
}
