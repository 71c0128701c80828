/** A connection URL fit for a log line or an error: its password, if any, replaced with ***. */
export function maskedUrl(text: string): string {
  try {
    const url = new URL(text);
    if (url.password) url.password = "***";
    return url.toString();
  } catch {
    return "(not a URL)";
  }
}
