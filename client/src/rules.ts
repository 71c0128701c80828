import { TallyValidationError } from "./errors.ts";

/**
 * The service's rules for one increment (docs/api.md), checked before a call is buffered: a call that
 * breaks one rejects at once, instead of failing the batch of good calls it would have joined.
 */

/** What a Postgres index entry holds; the service refuses longer keys whatever MAX_KEY_LENGTH says. */
export const MAX_KEY_BYTES = 2048;

export function checkIncrement(key: unknown, value: unknown, maxKeyLength: number): void {
  if (typeof key !== "string") throw new TallyValidationError("key must be a string");
  if (key.length === 0) throw new TallyValidationError("key must not be empty");
  // A code point is one or two UTF-16 units: only a key longer in units than the limit can exceed it.
  if (key.length > maxKeyLength && codePoints(key) > maxKeyLength) {
    throw new TallyValidationError(`key must be at most ${maxKeyLength} characters`);
  }
  if (key.length * 3 > MAX_KEY_BYTES && Buffer.byteLength(key, "utf8") > MAX_KEY_BYTES) {
    throw new TallyValidationError(`key must be at most ${MAX_KEY_BYTES} bytes in UTF-8`);
  }
  if (!key.isWellFormed()) {
    throw new TallyValidationError("key must be well-formed Unicode (no lone surrogates)");
  }
  if (key.includes("\u0000")) throw new TallyValidationError("key must not contain the NUL character");
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new TallyValidationError("value must be an integer");
  }
  if (!Number.isSafeInteger(value)) throw new TallyValidationError("value must be within ±(2^53−1)");
}

function codePoints(text: string): number {
  let count = 0;
  for (const _ of text) count++;
  return count;
}
