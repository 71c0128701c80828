/** One increment as the service takes it. */
export interface Increment {
  key: string;
  value: number;
}

/** The service's RFC 9457 problem, as far as the client reads it. */
export interface Problem {
  type?: string;
  title?: string;
  status: number;
  code?: string;
  detail?: string;
  requestId?: string;
  errors?: { pointer: string; detail: string }[];
}

/** Every error the client rejects a call with. */
export class TallyError extends Error {
  override name = "TallyError";
}

/** The call breaks a rule of the service (key or value); it was never buffered or sent. */
export class TallyValidationError extends TallyError {
  override name = "TallyValidationError";
}

/** `increment()` after `close()`: nothing was buffered. */
export class TallyClosedError extends TallyError {
  override name = "TallyClosedError";
  constructor() {
    super("the client is closed");
  }
}

/**
 * The service refused the batch that carried the call (a 4xx other than 429): not counted, and retrying
 * the same request would be refused again. One exception, `counter_out_of_range`: the batch's other shards
 * were applied (see `partlyApplied`).
 */
export class TallyRejectedError extends TallyError {
  override name = "TallyRejectedError";
  readonly status: number;
  readonly problem: Problem;
  /** True for counter_out_of_range: some of the batch's increments were counted, those on other shards. */
  readonly partlyApplied: boolean;

  constructor(problem: Problem) {
    super(`tally refused the batch: ${problem.status} ${problem.code ?? ""} ${problem.detail ?? ""}`.trim());
    this.status = problem.status;
    this.problem = problem;
    this.partlyApplied = problem.code === "counter_out_of_range";
  }
}

/**
 * The retries ran out after at least one attempt whose outcome the client cannot know (a timeout, a lost
 * connection, a 5xx): the batch was counted once or not at all. Sending `increments` again with the same
 * `idempotencyKey` (`TallyClient.resend`) settles it, and never counts twice while the service remembers
 * the key (IDEMPOTENCY_TTL_S, 24 h by default).
 */
export class TallyOutcomeUnknownError extends TallyError {
  override name = "TallyOutcomeUnknownError";
  readonly idempotencyKey: string;
  readonly increments: readonly Increment[];
  readonly attempts: number;

  constructor(idempotencyKey: string, increments: readonly Increment[], attempts: number, cause: unknown) {
    super(
      `the batch's outcome is unknown after ${attempts} attempts (${describe(cause)}); resend it with Idempotency-Key ${idempotencyKey} to settle it`,
      { cause },
    );
    this.idempotencyKey = idempotencyKey;
    this.increments = increments;
    this.attempts = attempts;
  }
}

function describe(cause: unknown): string {
  if (cause instanceof TallyError) return cause.message;
  if (cause instanceof Error) return cause.cause instanceof Error ? cause.cause.message : cause.message;
  return String(cause);
}
