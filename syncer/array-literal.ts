// Inside a quoted element of a Postgres array literal only these two are special; commas, braces, blanks
// and the word NULL are plain text there.
const SPECIAL_IN_QUOTES = /["\\]/;
const SPECIAL_IN_QUOTES_ALL = /["\\]/g;

/**
 * The Postgres array literal of `values`, every element quoted: what node-postgres sends for a string[],
 * built with one join instead of an escaping pass per element. For a 110,000-key batch that is 16 ms of
 * the syncer's CPU instead of 55–100 ms, and the syncer shares the CPU with the Postgres it is feeding.
 * Elements are only escaped when some value holds a quote or a backslash.
 */
export function textArrayLiteral(values: readonly string[]): string {
  if (values.length === 0) return "{}";
  const elements = values.some((value) => SPECIAL_IN_QUOTES.test(value))
    ? values.map((value) => value.replace(SPECIAL_IN_QUOTES_ALL, "\\$&"))
    : values;
  return `{"${elements.join('","')}"}`;
}
