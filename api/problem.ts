import type { Context } from "hono";
import type { AppEnv } from "./context.ts";
import { type ApiError, type FieldError, PROBLEMS, type ProblemCode } from "./errors.ts";
import { respond } from "./respond.ts";

/** The RFC 9457 problem every error is answered with, as the client receives it. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance: string;
  code: ProblemCode;
  requestId: string;
  errors?: FieldError[];
}

/** Answers `error` as an application/problem+json response. */
export function problemResponse(c: Context<AppEnv>, error: ApiError): Response {
  c.set("problem", error.code);
  const problem: Problem = {
    type: `urn:tally:problem:${error.code}`,
    title: PROBLEMS[error.code].title,
    status: error.status,
    detail: error.message,
    instance: c.req.path,
    code: error.code,
    requestId: c.get("requestId"),
    ...(error.errors ? { errors: error.errors } : {}),
  };
  return respond(c, error.status, JSON.stringify(problem), {
    ...error.headers,
    "content-type": "application/problem+json",
  });
}
