import * as v from "valibot";
import { ApiError, type FieldError, type ProblemCode } from "./errors.ts";

/** Parses `input` with `schema`, or throws one 400 problem that lists every failing field. */
export function parseOrThrow<TSchema extends v.GenericSchema>(
  schema: TSchema,
  input: unknown,
  code: ProblemCode,
): v.InferOutput<TSchema> {
  // One message per field: "1.5" is not an integer, and saying it is also out of range adds nothing.
  const result = v.safeParse(schema, input, { abortPipeEarly: true });
  if (result.success) return result.output;
  const errors: FieldError[] = result.issues.map((issue) => ({
    pointer: toJsonPointer(issue.path),
    detail: issue.message,
  }));
  throw new ApiError(code, errors.map((error) => error.detail).join("; "), { errors });
}

function toJsonPointer(path: v.BaseIssue<unknown>["path"]): string {
  if (!path) return "";
  return path.map((item) => `/${String(item.key).replaceAll("~", "~0").replaceAll("/", "~1")}`).join("");
}
