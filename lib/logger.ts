import { pino } from "pino";

export type Logger = pino.Logger;

export function createLogger(options: {
  level: string;
  role: string;
  /** Where the JSON lines go; stdout unless told (tests capture them). */
  destination?: pino.DestinationStream;
}): Logger {
  return pino(
    {
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
          "*.headers.authorization",
          "token",
          "*.token",
          "secret",
          "*.secret",
        ],
        censor: "[redacted]",
      },
    },
    options.destination,
  );
}

/**
 * `logger.child(bindings())`, made on first use. A child costs about half a microsecond (the bindings are
 * serialised up front), which every request would pay although almost none of them logs anything.
 */
export function lazyChild(logger: Logger, bindings: () => pino.Bindings): Logger {
  let child: Logger | undefined;
  const resolve = () => {
    child ??= logger.child(bindings());
    return child;
  };
  return new Proxy(logger, {
    get(_, property) {
      const target = resolve();
      const value: unknown = Reflect.get(target, property);
      // Bound, so pino's methods see the child (its bindings, its level) as `this`, not the proxy.
      return typeof value === "function" ? value.bind(target) : value;
    },
    set(_, property, value) {
      return Reflect.set(resolve(), property, value);
    },
  });
}
