export { TallyClient, type TallyClientStats } from "./client.ts";
export type { CounterPage, CounterReading, ListOptions } from "./counters.ts";
export {
  type Increment,
  type Problem,
  TallyClosedError,
  TallyError,
  TallyOutcomeUnknownError,
  TallyRejectedError,
  TallyValidationError,
} from "./errors.ts";
export type { ErrorContext, TallyClientOptions } from "./options.ts";
export { TallyUnavailableError } from "./request.ts";
export { DEFAULT_RETRY, type RetryPolicy } from "./retry.ts";
export type { TokenSource } from "./token.ts";
