// k6 gives scripts a console (log, info, warn, error, debug; printed through k6's logger), which @types/k6
// does not declare and the ES2020 lib leaves out with the rest of the DOM.
declare var console: {
  log(...data: unknown[]): void;
  info(...data: unknown[]): void;
  warn(...data: unknown[]): void;
  error(...data: unknown[]): void;
  debug(...data: unknown[]): void;
};
