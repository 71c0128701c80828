import * as v from "valibot";
import { readJsonBody } from "../body.ts";
import { checkKeys } from "../namespaces.ts";
import { describeProperties, jsonSchemaOf } from "../openapi/json-schema.ts";
import type { Operation } from "../operation.ts";
import {
  bodyIsNotAnArray,
  counterKeyRules,
  counterKeySchema,
  idempotencyKeySchema,
  incrementValueSchema,
  isPlainIncrement,
} from "../schemas.ts";
import type { IncrementStore } from "../store/increments.ts";
import { parseOrThrow } from "../validation.ts";
import { answerWrite, idempotencyKeyOf, WRITE_PROBLEMS, writeRequestDoc } from "./writes.ts";

export interface IncrementOptions {
  increment: IncrementStore;
  maxKeyLength: number;
  bodyLimitBytes: number;
}

export function incrementBodySchema(maxKeyLength: number) {
  return v.pipe(
    v.unknown(),
    bodyIsNotAnArray,
    v.strictObject({ key: counterKeySchema(maxKeyLength), value: incrementValueSchema }, (issue) => {
      if (!issue.path) return "the body must be a JSON object";
      // The object's own issues with a path: a field it lacks, or one it does not know.
      const field = issue.path.at(-1)?.key;
      if (issue.input === undefined && (field === "key" || field === "value")) return `${field} is required`;
      return `unexpected field ${JSON.stringify(field)}: the body has only key and value`;
    }),
  );
}

/** POST /increment: adds `value` to the counter `key`, answered 202 once Redis holds it. */
export function incrementOperation(options: IncrementOptions): Operation {
  const { maxKeyLength, bodyLimitBytes } = options;
  const bodySchema = incrementBodySchema(maxKeyLength);
  return {
    id: "increment",
    method: "POST",
    path: "/increment",
    scope: "counters:write",
    bodyLimitBytes,
    problems: WRITE_PROBLEMS,
    async handler(c) {
      const input = await readJsonBody(c, bodyLimitBytes);
      const body = isPlainIncrement(input, maxKeyLength)
        ? input
        : parseOrThrow(bodySchema, input, "invalid_body");
      checkKeys(c.get("client"), [body.key], () => "/key");
      const outcome = await options.increment({
        increments: [body],
        idempotency: idempotencyKeyOf(c),
        endpoint: "increment",
      });
      return answerWrite(c, outcome, "increment");
    },
    doc: {
      summary: "Add value to the counter key",
      description:
        "Answers 202 only after Redis acknowledged the increment; no 202 is ever sent for a write Redis did not take. A rejected request stores nothing.",
      ...writeRequestDoc(
        "IncrementBody",
        `${bodyLimitBytes} bytes (BODY_LIMIT_BYTES)`,
        "Redis holds the increment.",
      ),
      components: {
        schemas: {
          IncrementBody: describeProperties(
            jsonSchemaOf(
              bodySchema,
              "One increment. Any other field is rejected, so a typo such as vaule does not silently count nothing.",
            ),
            {
              key: counterKeyRules(maxKeyLength),
              value:
                'A JSON integer within ±(2^53−1). Negative values decrement; 0 is accepted and changes nothing. 2.0 and 1e3 are integers; 1.5, "1" and true are not.',
            },
          ),
        },
        parameters: {
          IdempotencyKey: {
            name: "Idempotency-Key",
            in: "header",
            required: false,
            description:
              "Makes a retry safe: a request with the same key from the same client (the token's sub) within IDEMPOTENCY_TTL_S (24 h by default) answers 202 with Idempotent-Replayed: true and is applied once; the same key with a different body is 422 idempotency_key_reused where the bodies share a shard (always for the same counter key), else a new request. Compared byte for byte; a UUID per logical increment is the usual choice.",
            schema: jsonSchemaOf(idempotencyKeySchema),
          },
        },
      },
    },
  };
}
