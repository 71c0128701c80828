import type { Context } from "hono";
import type { AppEnv } from "./context.ts";
import { ApiError } from "./errors.ts";
import { requestHeader } from "./request-headers.ts";

// fatal: lenient decoding would turn bytes that are not UTF-8 into U+FFFD and store a key the client never
// sent (merging distinct keys). A leading BOM is still skipped. Without `stream`, decode() keeps no state
// between calls, so one decoder serves every request.
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Reads a request body of at most `maxBytes` and decodes it as JSON.
 *
 * Not hono/body-limit: that middleware looks at `request.body`, which makes @hono/node-server build a full
 * WHATWG Request (a ReadableStream, an AbortSignal, undici's header lists) for every request, ~10% of the
 * API's CPU under load. A body with a Content-Length takes the adapter's direct read instead; only a chunked
 * body, which declares no size, is streamed and counted.
 */
export async function readJsonBody(c: Context<AppEnv>, maxBytes: number): Promise<unknown> {
  const bytes = await readLimited(c.req.raw, declaredLength(c), maxBytes);
  let text: string;
  try {
    text = strictUtf8.decode(bytes);
  } catch {
    throw new ApiError("invalid_body", "the body is not valid UTF-8");
  }
  if (text.trim() === "") throw new ApiError("invalid_body", "the body is empty: send a JSON object");
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError("invalid_body", "the body is not valid JSON");
  }
}

export function payloadTooLarge(maxBytes: number): ApiError {
  return new ApiError("payload_too_large", `the body must be at most ${maxBytes} bytes`);
}

/** The size a request declares, or undefined when it declares none (chunked) or an unusable one. */
export function declaredLength(c: Context<AppEnv>): number | undefined {
  if (requestHeader(c, "transfer-encoding") !== undefined) return undefined;
  const header = requestHeader(c, "content-length");
  return header !== undefined && /^\d+$/.test(header) ? Number(header) : undefined;
}

async function readLimited(
  request: Request,
  declared: number | undefined,
  maxBytes: number,
): Promise<Uint8Array> {
  if (declared !== undefined) {
    if (declared > maxBytes) throw payloadTooLarge(maxBytes);
    const bytes = new Uint8Array(await request.arrayBuffer());
    // Node's HTTP parser holds a client to its Content-Length; a Request built in a test may not.
    if (bytes.byteLength > maxBytes) throw payloadTooLarge(maxBytes);
    return bytes;
  }
  if (request.body === null) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = request.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => {});
      throw payloadTooLarge(maxBytes);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, size);
}
