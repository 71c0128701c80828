/**
 * Counter keys in the order listings use: Unicode code point order, which is how Postgres' "C" collation
 * orders the keys' UTF-8 bytes. JavaScript's own string comparison orders UTF-16 code units instead, and
 * puts a key with an emoji (a surrogate pair) before one with U+FFFD. Keys are well-formed: no lone surrogates.
 */
export function compareKeys(a: string, b: string): number {
  const length = Math.min(a.length, b.length);
  for (let index = 0; index < length; index++) {
    const left = a.charCodeAt(index);
    const right = b.charCodeAt(index);
    if (left !== right) return codePointRank(left) - codePointRank(right);
  }
  return a.length - b.length;
}

/** Moves the surrogates (which start the code points above U+FFFF) after the rest of the BMP. */
function codePointRank(unit: number): number {
  if (unit >= 0xe000) return unit - 0x800;
  if (unit >= 0xd800) return unit + 0x2000;
  return unit;
}

/**
 * The least string above every key that starts with `prefix`, in key order: the prefix with its last code
 * point raised by one (dropping trailing U+10FFFF, which cannot be raised). Null when no string is above
 * them all: the prefix is empty or all U+10FFFF.
 */
export function prefixEnd(prefix: string): string | null {
  const codePoints = [...prefix];
  for (let last = codePoints.pop(); last !== undefined; last = codePoints.pop()) {
    const codePoint = last.codePointAt(0) ?? 0;
    if (codePoint < 0x10ffff) {
      // U+D800 to U+DFFF are surrogates, not characters: the next character after U+D7FF is U+E000.
      const next = codePoint === 0xd7ff ? 0xe000 : codePoint + 1;
      return codePoints.join("") + String.fromCodePoint(next);
    }
  }
  return null;
}
