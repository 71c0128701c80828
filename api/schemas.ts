import * as v from "valibot";

/**
 * A counter key: what Postgres `text` and a Redis hash field both store byte-exact. That rules out NUL
 * (Postgres text cannot hold it) and lone surrogates (they have no UTF-8 form, so the stored bytes would
 * not be the key the client sent).
 */
export function counterKeySchema(maxLength: number) {
  return v.pipe(
    v.string((issue) => (issue.input === undefined ? "key is required" : "key must be a string")),
    v.nonEmpty("key must not be empty"),
    v.maxCodePoints(maxLength, `key must be at most ${maxLength} characters`),
    v.check((key) => key.isWellFormed(), "key must be well-formed Unicode (no lone surrogates)"),
    v.check((key) => !key.includes("\u0000"), "key must not contain the NUL character"),
  );
}

export const incrementValueSchema = v.pipe(
  v.number((issue) => (issue.input === undefined ? "value is required" : "value must be an integer")),
  v.integer("value must be an integer"),
  v.safeInteger("value must be within ±(2^53−1)"),
);

export function incrementBodySchema(maxKeyLength: number) {
  return v.strictObject({ key: counterKeySchema(maxKeyLength), value: incrementValueSchema }, (issue) =>
    issue.path ? "unexpected field: the body has only key and value" : "the body must be a JSON object",
  );
}

export type IncrementBody = v.InferOutput<ReturnType<typeof incrementBodySchema>>;
