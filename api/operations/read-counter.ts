import * as v from "valibot";
import { ApiError } from "../errors.ts";
import { jsonSchemaOf } from "../openapi/json-schema.ts";
import type { Operation } from "../operation.ts";
import { respond } from "../respond.ts";
import { counterKeyRules, counterKeySchema } from "../schemas.ts";
import { type CounterReader, ReadFailure } from "../store/read-counter.ts";
import { readProblem } from "../store-problems.ts";
import { parseOrThrow } from "../validation.ts";

export interface ReadCounterOptions {
  readCounter: CounterReader;
  maxKeyLength: number;
}

/**
 * What GET /counters/{key} answers. The route writes that JSON by hand (64-bit totals must not round through
 * a double), so this schema describes it rather than produces it: the OpenAPI document is generated from it,
 * and test/api/openapi.test.ts checks real answers against the document.
 */
export function counterReadingSchema(maxKeyLength: number) {
  const exactInteger = (description: string) =>
    v.pipe(
      v.number(),
      v.integer(),
      v.description(
        `${description} An exact JSON integer that can exceed 2^53: JavaScript's JSON.parse rounds such numbers, so parse with a big-integer-aware parser if totals can get there.`,
      ),
    );
  // Not strict: a client should ignore fields added later rather than reject the answer.
  return v.object({
    key: counterKeySchema(maxKeyLength),
    persisted: exactInteger("The total in Postgres (a signed 64-bit integer)."),
    pending: exactInteger("Accepted increments Postgres does not hold yet."),
    total: exactInteger("persisted + pending."),
    persistedAsOf: v.pipe(
      v.nullable(v.pipe(v.string(), v.isoTimestamp())),
      v.description(
        "Every increment accepted before this instant is in persisted; null before the first sync.",
      ),
    ),
  });
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
    problems: [
      "invalid_key",
      "counter_not_found",
      "redis_unavailable",
      "database_unavailable",
      "internal_error",
    ],
    async handler(c) {
      const key = parseOrThrow(keySchema, c.req.param("key"), "invalid_key");
      const reading = await options.readCounter(key).catch((error: unknown) => {
        throw error instanceof ReadFailure ? readProblem(error) : error;
      });
      if (!reading.found) throw new ApiError("counter_not_found", "nothing was ever counted for this key");
      const total = reading.persisted + reading.pending;
      // Hand-built so 64-bit totals stay exact JSON integers rather than rounding through a double.
      const json = `{"key":${JSON.stringify(key)},"persisted":${reading.persisted},"pending":${reading.pending},"total":${total},"persistedAsOf":${JSON.stringify(reading.persistedAsOf)}}`;
      return respond(c, 200, json, { "content-type": "application/json" });
    },
    doc: {
      summary: "Read a counter: persisted, pending and their total",
      description:
        "The reading never counts a delta twice or misses one while the syncer works. 404 counter_not_found when nothing was ever counted for the key.",
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
