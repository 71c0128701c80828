/** Reading markdown the way a reader sees it: prose apart from code, with line numbers kept. */

export interface Parts {
  /** The document with every code block and code span blanked out, line numbers kept. */
  prose: string;
  /** The code blocks, everything else blanked out (line numbers kept), then the code spans. */
  code: string;
  /** The code spans of the prose, without their backticks. */
  spans: CodeSpan[];
}

export interface CodeSpan {
  text: string;
  line: number;
}

const FENCE = /^ {0,3}(`{3,}|~{3,})/;
// A code span closes with a run of backticks as long as the one that opened it, within its paragraph.
const CODE_SPAN = /(`+)(?!`)(?:(?!\n[ \t]*\n)[\s\S])*?(?<!`)\1(?!`)/g;

const blank = (text: string) => text.replace(/[^\n]/g, " ");

/** Splits markdown into prose and code: a URL in an example is not a link, and a link in code is not one. */
export function splitCode(markdown: string): Parts {
  const prose: string[] = [];
  const code: string[] = [];
  let fence: string | undefined;
  for (const line of markdown.split("\n")) {
    const marker = FENCE.exec(line)?.[1];
    const inCode = fence !== undefined || marker !== undefined;
    if (fence === undefined) {
      if (marker !== undefined) fence = marker;
    } else if (marker !== undefined && marker[0] === fence[0] && marker.length >= fence.length) {
      // A fence closes on a line of the same character, at least as long as the one that opened it.
      fence = undefined;
    }
    prose.push(inCode ? blank(line) : line);
    code.push(inCode ? line : blank(line));
  }
  const withSpans = prose.join("\n");
  const matches = [...withSpans.matchAll(CODE_SPAN)];
  const spans = matches.map((match) => {
    const ticks = match[1]?.length ?? 1;
    return { text: match[0].slice(ticks, -ticks).trim(), line: lineAt(withSpans, match.index) };
  });
  return {
    prose: withSpans.replace(CODE_SPAN, blank),
    code: `${code.join("\n")}\n${matches.map((match) => match[0]).join("\n")}`,
    spans,
  };
}

export const lineAt = (text: string, index: number) => text.slice(0, index).split("\n").length;
