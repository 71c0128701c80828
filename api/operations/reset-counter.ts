import { ApiError } from "../errors.ts";
import { checkKeys } from "../namespaces.ts";
import { jsonSchemaOf } from "../openapi/json-schema.ts";
import type { Operation } from "../operation.ts";
import { counterKeyRules, counterKeySchema } from "../schemas.ts";
import type { CounterResetter } from "../store/resets.ts";
import { parseOrThrow } from "../validation.ts";
import { answerWrite, idempotencyKeyOf } from "./writes.ts";

export interface ResetCounterOptions {
  resetCounter: CounterResetter;
  maxKeyLength: number;
}

/** DELETE /counters/{key}: sets the counter back to zero, ordered against its increments. */
export function resetCounterOperation(options: ResetCounterOptions): Operation {
  const keySchema = counterKeySchema(options.maxKeyLength);
  return {
    id: "resetCounter",
    method: "DELETE",
    path: "/counters/:key{[\\s\\S]+}",
    scope: "counters:reset",
    problems: [
      "invalid_key",
      "invalid_idempotency_key",
      "namespace_forbidden",
      "idempotency_key_reused",
      "idempotency_capacity",
      "counter_resharding",
      "redis_unavailable",
      "redis_full",
      "replication_unconfirmed",
      "internal_error",
    ],
    async handler(c) {
      const key = parseOrThrow(keySchema, c.req.param("key"), "invalid_key");
      checkKeys(c.get("client"), [key]);
      const outcome = await options.resetCounter({ key, idempotency: idempotencyKeyOf(c) });
      if (outcome.kind === "resharding")
        throw new ApiError(
          "counter_resharding",
          "another shard still holds increments of this key from before SYNC_SHARDS changed; nothing was reset. The syncer moves them to Postgres within a cycle: retry then",
          { headers: { "Retry-After": "5" } },
        );
      return answerWrite(c, outcome, "reset");
    },
    doc: {
      summary: "Reset a counter to zero",
      description:
        "One step in Redis, ordered against the key's increments: one answered 202 before the reset was sent is discarded, one sent after the reset's answer counts, and one in flight at the same time lands wholly on one side. The syncer deletes the key's row in the same transaction as the batch that carries the reset, so until another increment comes the key reads as 404 and is not listed. Answers 202 once Redis holds the reset (and the replicas asked for); a key nothing counted is reset all the same.",
      parameters: [
        {
          name: "key",
          in: "path",
          required: true,
          description: `${counterKeyRules(options.maxKeyLength)} Percent-encoded; it may contain slashes.`,
          schema: jsonSchemaOf(keySchema),
        },
        { $ref: "#/components/parameters/IdempotencyKey" },
      ],
      responses: {
        "202": {
          description: "Accepted: Redis holds the reset. Empty body.",
          headers: { "Idempotent-Replayed": false },
        },
      },
    },
  };
}
