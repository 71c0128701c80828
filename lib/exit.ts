import cluster from "node:cluster";
import type { Logger } from "./logger.ts";

/** sysexits' EX_CONFIG, as for a bad environment variable (lib/config.ts): the operator must change a setting. */
export const EX_CONFIG = 78;

const MESSAGE_TYPE = "tally:exit-for-operator";

interface ExitMessage {
  type: typeof MESSAGE_TYPE;
  message: string;
}

let exiting = false;

/**
 * Stops a process that must not run as things are set up, with one line that says why and what to change,
 * and exit code 78. In an API worker the line is the primary's to print, once for all its workers, and the
 * primary stops the node (see `exitForOperatorMessage`).
 */
export function exitForOperator(logger: Logger, message: string): void {
  if (exiting) return;
  exiting = true;
  if (cluster.isWorker && process.send) {
    const exitMessage: ExitMessage = { type: MESSAGE_TYPE, message };
    process.send(exitMessage, () => process.exit(EX_CONFIG));
    return;
  }
  logger.fatal(message);
  process.exit(EX_CONFIG);
}

/** In a cluster primary: a worker's `exitForOperator` message, with its line; undefined for any other. */
export function exitForOperatorMessage(message: unknown): string | undefined {
  if (typeof message !== "object" || message === null) return undefined;
  const candidate = message as Partial<ExitMessage>;
  return candidate.type === MESSAGE_TYPE && typeof candidate.message === "string"
    ? candidate.message
    : undefined;
}
