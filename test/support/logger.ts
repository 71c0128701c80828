import { createLogger, type Logger } from "../../lib/logger.ts";

export const silentLogger = createLogger({ level: "silent", role: "test" });

export interface LogLine {
  level: string;
  msg: string;
  [field: string]: unknown;
}

/** A real pino logger (tally's own configuration) whose JSON lines the test can read back. */
export function captureLogger(level = "info"): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const destination = {
    write(chunk: string) {
      for (const line of chunk.split("\n")) if (line.trim() !== "") lines.push(JSON.parse(line) as LogLine);
    },
  };
  return { logger: createLogger({ level, role: "test", destination }), lines };
}
