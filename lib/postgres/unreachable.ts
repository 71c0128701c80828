// Node's socket errors for a server that is not there (yet): refused, unknown host, no route, cut off.
const NETWORK_ERRORS = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPIPE",
]);
// SQLSTATEs of a server that answered but cannot take connections now: shutting down, crashed, starting.
const NOT_ACCEPTING = new Set(["57P01", "57P02", "57P03"]);
// pg's own errors for a connection it could not make or lost; they carry no code.
const PG_CONNECTION_MESSAGES = [
  "Connection terminated",
  "timeout exceeded when trying to connect",
  "Client has encountered a connection error",
];

/** True when an error means Postgres could not be reached at all, as opposed to refusing what was asked. */
export function isPostgresUnreachable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string") {
    return NETWORK_ERRORS.has(code) || NOT_ACCEPTING.has(code) || code.startsWith("08");
  }
  return PG_CONNECTION_MESSAGES.some((message) => error.message.startsWith(message));
}
