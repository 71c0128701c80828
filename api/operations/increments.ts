import * as v from "valibot";
import { readJsonBody } from "../body.ts";
import { chargeRest } from "../middleware/rate-limit/index.ts";
import { checkKeys } from "../namespaces.ts";
import { describeProperties, jsonSchemaOf } from "../openapi/json-schema.ts";
import type { Operation } from "../operation.ts";

import {
  bodyIsNotAnArray,
  counterKeyRules,
  counterKeySchema,
  incrementValueSchema,
  isPlainBatch,
} from "../schemas.ts";
import type { IncrementStore } from "../store/increments.ts";

import { parseOrThrow } from "../validation.ts";
import { answerWrite, idempotencyKeyOf, WRITE_PROBLEMS, writeRequestDoc } from "./writes.ts";

export interface IncrementsOptions {
  increment: IncrementStore;
  maxKeyLength: number;
  /** MAX_BATCH_SIZE. */
  maxBatchSize: number;
}

/**
 * The largest body a batch at the limits can be: every key at MAX_KEY_LENGTH characters, each written as a
 * six-byte JSON escape, and the longest value.
 */
export function batchBodyLimitBytes(maxBatchSize: number, maxKeyLength: number): number {
  return 64 + maxBatchSize * (maxKeyLength * 6 + 64);
}

export function incrementsBodySchema(maxKeyLength: number, maxBatchSize: number) {
  const item = v.strictObject(
    { key: counterKeySchema(maxKeyLength), value: incrementValueSchema },
    (issue) => {
      const field = issue.path?.at(-1)?.key;
      if (issue.input === undefined && (field === "key" || field === "value")) return `${field} is required`;
      if (typeof field === "string")
        return `unexpected field ${JSON.stringify(field)}: an increment has only key and value`;
      return "an increment must be a JSON object";
    },
  );
  return v.pipe(
    v.unknown(),
    bodyIsNotAnArray,
    v.strictObject(
      {
        increments: v.pipe(
          v.array(item, (issue) =>
            issue.input === undefined ? "increments is required" : "increments must be an array",
          ),
          v.minLength(1, "increments must hold at least one increment"),
          v.maxLength(
            maxBatchSize,
            `increments must hold at most ${maxBatchSize} increments (MAX_BATCH_SIZE)`,
          ),
        ),
      },
      (issue) => {
        if (!issue.path) return "the body must be a JSON object";
        const field = issue.path.at(-1)?.key;
        if (issue.input === undefined && field === "increments") return "increments is required";
        return `unexpected field ${JSON.stringify(field)}: the body has only increments`;
      },
    ),
  );
}

/**
 * POST /increments: many increments in one request, each following POST /increment's rules, one point of
 * the client's quota each. Validation is all or nothing. Each shard's part is applied whole or not at all;
 * parts in different shards are independent, so a batch some of whose parts failed is answered with what
 * happened to each (see store/write-outcome.ts), never with a 202.
 */
export function incrementsOperation(options: IncrementsOptions): Operation {
  const { maxKeyLength, maxBatchSize } = options;
  const bodyLimitBytes = batchBodyLimitBytes(maxBatchSize, maxKeyLength);
  const bodySchema = incrementsBodySchema(maxKeyLength, maxBatchSize);
  return {
    id: "incrementMany",
    method: "POST",
    path: "/increments",
    scope: "counters:write",
    bodyLimitBytes,
    problems: WRITE_PROBLEMS,
    async handler(c) {
      const body = await readJsonBody(c, bodyLimitBytes);
      const { increments } = isPlainBatch(body, maxKeyLength, maxBatchSize)
        ? body
        : parseOrThrow(bodySchema, body, "invalid_body");
      checkKeys(
        c.get("client"),
        increments.map(({ key }) => key),
        (index) => `/increments/${index}/key`,
      );
      const idempotency = idempotencyKeyOf(c);
      await chargeRest(c, increments.length - 1);
      const outcome = await options.increment({ increments, idempotency, endpoint: "increments" });
      return answerWrite(c, outcome, "increments");
    },
    doc: {
      summary: "Add many values to their counters in one request",
      description: `1 to ${maxBatchSize} increments (MAX_BATCH_SIZE), each following the rules of POST /increment; a key may appear several times (the values add up). Each increment spends one point of the client's quota. Validation is all or nothing: one bad increment is a 400 naming it, and nothing is stored. 202 only once every increment is in Redis. Each shard's part is applied whole or not at all, but parts on different shards cannot be one atomic step: when some were applied and others not, the answer is a problem (422 for increments refused, 503 when Redis failed) whose detail says how many were applied. A batch you may retry must carry an Idempotency-Key: a retry with the same key applies each part exactly once.`,
      ...writeRequestDoc(
        "IncrementsBody",
        `${bodyLimitBytes} bytes (sized from MAX_BATCH_SIZE and MAX_KEY_LENGTH)`,
        "Redis holds every increment.",
      ),
      components: {
        schemas: {
          IncrementsBody: describeProperties(jsonSchemaOf(bodySchema, "A batch of increments."), {
            increments: `Each: {"key", "value"}. key: ${counterKeyRules(maxKeyLength)} value: a JSON integer within ±(2^53−1).`,
          }),
        },
      },
    },
  };
}
