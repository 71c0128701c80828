import { Hono } from "hono";
import type { AppEnv } from "../context.ts";
import { buildOpenApiDocument, type OpenApiOptions } from "../openapi.ts";

/** GET /openapi.json, without a token: the API's description is no secret and clients fetch it first. */
export function openApiRoute(options: OpenApiOptions) {
  // Built once, with the app: it depends only on the configuration, which does not change while a node runs.
  const document = JSON.stringify(buildOpenApiDocument(options));
  return new Hono<AppEnv>().get("/openapi.json", (c) =>
    c.body(document, 200, {
      "content-type": "application/json",
      // Changes only with a deploy; five minutes of caching spares the nodes without keeping a stale copy long.
      "cache-control": "public, max-age=300",
    }),
  );
}
