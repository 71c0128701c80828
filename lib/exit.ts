import cluster from "node:cluster";
import type { Logger } from "./logger.ts";

/** sysexits' EX_CONFIG, as for a bad environment variable (lib/config.ts): the operator must change a setting. */
export const EX_CONFIG = 78;
/** sysexits' EX_UNAVAILABLE: a service the process needs (Postgres) cannot be reached. */
export const EX_UNAVAILABLE = 69;

/**
 * A reason to stop that the operator can act on (a port in use, a store that cannot be reached, an unsafe
 * Redis setting): its message is the whole story, so it is printed as one line, without a stack.
 */
export class OperatorError extends Error {
  override name = "OperatorError";
  constructor(
    message: string,
    readonly exitCode: number = EX_CONFIG,
  ) {
    super(message);
  }
}

const MESSAGE_TYPE = "tally:exit-for-operator";

interface ExitMessage {
  type: typeof MESSAGE_TYPE;
  message: string;
  exitCode: number;
}

let exiting = false;

/**
 * Stops a process that must not run as things are set up, with one line that says why and what to change.
 * In an API worker the line is the primary's to print, once for all its workers, and the primary stops the
 * node (see `exitForOperatorMessage`); a primary stops its workers first, so that none of them dies midway
 * through talking to it.
 */
export function exitForOperator(logger: Logger, message: string, exitCode = EX_CONFIG): void {
  if (exiting) return;
  exiting = true;
  if (cluster.isWorker && process.send) {
    const exitMessage: ExitMessage = { type: MESSAGE_TYPE, message, exitCode };
    process.send(exitMessage, () => process.exit(exitCode));
    return;
  }
  // Whatever they acknowledged is in Redis already.
  for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill("SIGKILL");
  logger.fatal(message);
  process.exit(exitCode);
}

/** In a cluster primary: a worker's `exitForOperator` message; undefined for any other. */
export function exitForOperatorMessage(message: unknown): Omit<ExitMessage, "type"> | undefined {
  if (typeof message !== "object" || message === null) return undefined;
  const candidate = message as Partial<ExitMessage>;
  return candidate.type === MESSAGE_TYPE &&
    typeof candidate.message === "string" &&
    typeof candidate.exitCode === "number"
    ? { message: candidate.message, exitCode: candidate.exitCode }
    : undefined;
}

/**
 * Runs an entry point's start-up. An OperatorError stops the process with its one line and exit code;
 * anything else is a bug, logged with its stack, and exit code 1.
 */
export async function startOrExit(logger: Logger, start: () => Promise<unknown>): Promise<void> {
  try {
    await start();
  } catch (error) {
    if (error instanceof OperatorError) {
      exitForOperator(logger, error.message, error.exitCode);
      return;
    }
    logger.fatal({ err: error }, "start-up failed");
    process.exit(1);
  }
}
