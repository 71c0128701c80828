import * as v from "valibot";
import type { ProblemCode } from "../errors.ts";
import { counterKeySchema } from "../schemas.ts";
import { type CounterReading, ReadFailure } from "../store/counter-readings.ts";
import { readProblem } from "../store-problems.ts";

/** What every read can answer besides its own problems: a store that cannot be read. */
export const READ_PROBLEMS: readonly ProblemCode[] = [
  "namespace_forbidden",
  "redis_unavailable",
  "database_unavailable",
  "internal_error",
];

/** Runs a read, turning a store that cannot answer into its problem. */
export async function readOrThrow<T>(read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (error) {
    throw error instanceof ReadFailure ? readProblem(error) : error;
  }
}

/**
 * One counter as JSON, built by hand so that 64-bit totals stay exact JSON integers rather than rounding
 * through a double. The shape counterReadingSchema describes.
 */
export function counterJson(reading: CounterReading): string {
  const total = reading.persisted + reading.pending;
  return `{"key":${JSON.stringify(reading.key)},"persisted":${reading.persisted},"pending":${reading.pending},"total":${total},"persistedAsOf":${JSON.stringify(reading.persistedAsOf)}}`;
}

/**
 * What a counter reads as. The routes write that JSON by hand (counterJson), so this schema describes it
 * rather than produces it: the OpenAPI document is generated from it, and test/api/openapi.test.ts checks
 * real answers against the document.
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
    pending: exactInteger(
      "What Redis holds that Postgres does not yet: accepted increments, and a reset's undoing of what came before it (so it can be negative).",
    ),
    total: exactInteger("persisted + pending."),
    persistedAsOf: v.pipe(
      v.nullable(v.pipe(v.string(), v.isoTimestamp())),
      v.description(
        "Every increment accepted before this instant is in persisted; null before the first sync.",
      ),
    ),
  });
}
