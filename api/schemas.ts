import * as v from "valibot";
import { MAX_KEY_BYTES } from "../lib/config.ts";

// Named, so that the OpenAPI generator (api/openapi.ts) can recognise these opaque checks and state them
// in JSON Schema; a check it does not recognise makes the document fail to build.
export const keyIsWellFormed = v.check(
  (key: string) => key.isWellFormed(),
  "key must be well-formed Unicode (no lone surrogates)",
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
    v.maxBytes(MAX_KEY_BYTES, `key must be at most ${MAX_KEY_BYTES} bytes in UTF-8`),
    keyIsWellFormed,
    keyHasNoNul,
  );
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

export function incrementBodySchema(maxKeyLength: number) {
  return v.pipe(v.unknown(), bodyIsNotAnArray, incrementObjectSchema(maxKeyLength));
}

function incrementObjectSchema(maxKeyLength: number) {
  return v.strictObject({ key: counterKeySchema(maxKeyLength), value: incrementValueSchema }, (issue) => {
    if (!issue.path) return "the body must be a JSON object";
    // The object's own issues with a path: a field it lacks, or one it does not know.
    const field = issue.path.at(-1)?.key;
    if (issue.input === undefined && (field === "key" || field === "value")) return `${field} is required`;
    return `unexpected field ${JSON.stringify(field)}: the body has only key and value`;
  });
}

export type IncrementBody = v.InferOutput<ReturnType<typeof incrementBodySchema>>;

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

/**
 * The Idempotency-Key header: 1 to 255 printable ASCII characters, compared byte for byte (a quoted value
 * keeps its quotes). A UUID per logical increment is the usual choice.
 */
export const idempotencyKeySchema = v.pipe(
  v.string(),
  v.regex(/^[\x20-\x7E]{1,255}$/, "Idempotency-Key must be 1 to 255 printable ASCII characters"),
);
