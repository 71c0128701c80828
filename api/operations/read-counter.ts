import { ApiError } from "../errors.ts";
import { checkKeys } from "../namespaces.ts";
import { jsonSchemaOf } from "../openapi/json-schema.ts";
import type { Operation } from "../operation.ts";
import { respond } from "../respond.ts";
import { counterKeyRules, counterKeySchema } from "../schemas.ts";
import type { CounterReader } from "../store/counter-readings.ts";
import { parseOrThrow } from "../validation.ts";
import { counterJson, counterReadingSchema, READ_PROBLEMS, readOrThrow } from "./readings.ts";

export interface ReadCounterOptions {
  readCounter: CounterReader;
  maxKeyLength: number;
}

/** GET /counters/{key}: the counter's persisted and pending totals. */
export function readCounterOperation(options: ReadCounterOptions): Operation {
  const keySchema = counterKeySchema(options.maxKeyLength);
  return {
    id: "readCounter",
    method: "GET",
    // {[\s\S]+} so that keys containing "/" (percent-encoded or not) reach the handler whole; not {.+}, whose
    // "." stops at line terminators, so a stored key with a newline, CR, U+2028 or U+2029 fell through to a 405.
    path: "/counters/:key{[\\s\\S]+}",
    scope: "counters:read",
    problems: ["invalid_key", "counter_not_found", ...READ_PROBLEMS],
    async handler(c) {
      const key = parseOrThrow(keySchema, c.req.param("key"), "invalid_key");
      checkKeys(c.get("client"), [key]);
      const [reading] = await readOrThrow(() => options.readCounter([key]));
      if (!reading?.found)
        throw new ApiError(
          "counter_not_found",
          "nothing counts for this key: it was never counted, or was reset since",
        );
      return respond(c, 200, counterJson(reading), { "content-type": "application/json" });
    },
    doc: {
      summary: "Read a counter: persisted, pending and their total",
      description:
        "The reading never counts a delta twice or misses one while the syncer works. 404 counter_not_found when nothing counts for the key: it was never counted, or it was reset and nothing was counted since.",
      parameters: [
        {
          name: "key",
          in: "path",
          required: true,
          description: `${counterKeyRules(options.maxKeyLength)} Percent-encoded; it may contain slashes. The keys . and .. cannot be read this way: URL parsing removes them from the path even when percent-encoded.`,
          schema: jsonSchemaOf(keySchema),
        },
      ],
      responses: {
        "200": {
          description: "The counter.",
          content: { "application/json": { schema: { $ref: "#/components/schemas/CounterReading" } } },
        },
      },
      components: { schemas: { CounterReading: jsonSchemaOf(counterReadingSchema(options.maxKeyLength)) } },
    },
  };
}
