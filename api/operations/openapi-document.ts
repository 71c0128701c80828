import type { Operation } from "../operation.ts";
import { respond } from "../respond.ts";

/**
 * GET /openapi.json, without a token: the API's description is no secret and clients fetch it first.
 * `document` is the rendered document's JSON, which the app makes once from every operation, this one too.
 */
export function openApiDocumentOperation(document: () => string): Operation {
  return {
    id: "openApiDocument",
    method: "GET",
    path: "/openapi.json",
    problems: [],
    handler: (c) =>
      respond(c, 200, document(), {
        "content-type": "application/json",
        // Changes only with a deploy; five minutes of caching spares the nodes without keeping a stale copy long.
        "cache-control": "public, max-age=300",
      }),
    doc: {
      summary: "This document",
      parameters: [],
      responses: {
        "200": {
          description: "The OpenAPI 3.1 document.",
          headers: { "Cache-Control": true },
          content: { "application/json": { schema: { type: "object" } } },
        },
      },
    },
  };
}
