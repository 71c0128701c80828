import * as v from "valibot";
import type { Increment } from "../lib/redis/script-replies.ts";
import { MAX_KEY_BYTES } from "../lib/settings.ts";

// Named, so that the OpenAPI generator (api/openapi.ts) can recognise these opaque checks and state them
// in JSON Schema; a check it does not recognise makes the document fail to build.
export const keyIsWellFormed = v.check(
  (key: string) => key.isWellFormed(),
  "key must be well-formed Unicode (no lone surrogates)",
);
// A UTF-16 unit is at most three bytes in UTF-8: a key of at most this many units fits whatever it holds.
const KEY_UNITS_ALWAYS_FITTING = Math.floor(MAX_KEY_BYTES / 3);

// valibot's maxBytes encodes every key into a new buffer to count its bytes, which was the largest cost of
// validating a batch; most keys need no count at all.
export const keyFitsInIndex = v.check(
  (key: string) => key.length <= KEY_UNITS_ALWAYS_FITTING || Buffer.byteLength(key, "utf8") <= MAX_KEY_BYTES,
  `key must be at most ${MAX_KEY_BYTES} bytes in UTF-8`,
);
export const keyHasNoNul = v.check(
  (key: string) => !key.includes("\u0000"),
  "key must not contain the NUL character",
);

/**
 * A counter key: what Postgres `text` and a Redis hash field both store byte-exact. That rules out NUL
 * (Postgres text cannot hold it) and lone surrogates (they have no UTF-8 form, so the stored bytes would
 * not be the key the client sent), and bounds its bytes by what the primary key's index entry can hold.
 */
export function counterKeySchema(maxLength: number) {
  return v.pipe(
    v.string((issue) => (issue.input === undefined ? "key is required" : "key must be a string")),
    v.nonEmpty("key must not be empty"),
    v.maxCodePoints(maxLength, `key must be at most ${maxLength} characters`),
    keyFitsInIndex,
    keyIsWellFormed,
    keyHasNoNul,
  );
}

/** The counter key's rules in words, for every place the document describes a key. */
export function counterKeyRules(maxKeyLength: number): string {
  return `A non-empty string of at most ${maxKeyLength} characters (Unicode code points, MAX_KEY_LENGTH) and at most ${MAX_KEY_BYTES} bytes in UTF-8 (what a Postgres index entry holds), stored byte-exact. NUL and lone surrogates are rejected: Postgres text cannot hold the first, and neither store can hold the second as sent.`;
}

export const incrementValueSchema = v.pipe(
  v.number((issue) => (issue.input === undefined ? "value is required" : "value must be an integer")),
  v.integer("value must be an integer"),
  v.safeInteger("value must be within ±(2^53−1)"),
);

/** valibot's object schemas take an array for an object with keys "0", "1", …: a body that is one is refused first. */
export const bodyIsNotAnArray = v.check(
  (input: unknown) => !Array.isArray(input),
  "the body must be a JSON object, not an array",
);

/**
 * The Idempotency-Key header: 1 to 255 printable ASCII characters, compared byte for byte (a quoted value
 * keeps its quotes). A UUID per logical increment is the usual choice.
 */
export const idempotencyKeySchema = v.pipe(
  v.string(),
  v.regex(/^[\x20-\x7E]{1,255}$/, "Idempotency-Key must be 1 to 255 printable ASCII characters"),
);

/**
 * True only for an increment the schemas above would accept and return as it is: an object of exactly `key`
 * and `value`, a key no rule needs a closer look at, a safe integer. Checked in one pass, without the
 * datasets and output objects valibot builds for every item of a batch, which made validation the largest
 * cost of a large batch. Anything else goes to valibot, which alone words what is wrong; this must never
 * accept what valibot refuses (test/api/plain-increments.test.ts compares the two).
 */
export function isPlainIncrement(input: unknown, maxKeyLength: number): input is Increment {
  if (typeof input !== "object" || input === null || Array.isArray(input)) return false;
  for (const field in input) if (field !== "key" && field !== "value") return false;
  const { key, value } = input as Record<"key" | "value", unknown>;
  return (
    typeof key === "string" &&
    key.length > 0 &&
    // Code points and UTF-8 bytes are within bounds whatever the key holds: nothing to count.
    key.length <= maxKeyLength &&
    key.length <= KEY_UNITS_ALWAYS_FITTING &&
    key.isWellFormed() &&
    !key.includes("\u0000") &&
    typeof value === "number" &&
    Number.isSafeInteger(value)
  );
}

/** isPlainIncrement for a POST /increments body: `{ increments }` and nothing else, within the batch's bounds. */
export function isPlainBatch(
  input: unknown,
  maxKeyLength: number,
  maxBatchSize: number,
): input is { increments: Increment[] } {
  if (typeof input !== "object" || input === null || Array.isArray(input)) return false;
  for (const field in input) if (field !== "increments") return false;
  const { increments } = input as { increments?: unknown };
  return (
    Array.isArray(increments) &&
    increments.length > 0 &&
    increments.length <= maxBatchSize &&
    increments.every((increment) => isPlainIncrement(increment, maxKeyLength))
  );
}
