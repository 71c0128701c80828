import { pino } from "pino";

export type Logger = pino.Logger;

export function createLogger(options: { level: string; role: string }): Logger {
  return pino({
    level: options.level,
    base: { role: options.role, pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    // Belt and braces: nothing logs these today, and a future debug line must not leak them either.
    redact: {
      paths: [
        "authorization",
        "*.authorization",
        "headers.authorization",
        "token",
        "*.token",
        "secret",
        "*.secret",
      ],
      censor: "[redacted]",
    },
  });
}
