import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { Redis } from "ioredis";
import { inWorkers, portAndWorkers } from "./workers.ts";

// What tally's stack costs with nothing of tally in it: Hono on @hono/node-server, one route that parses the
// body and HINCRBYs it through an auto-pipelining ioredis client, answering 202. No auth, rate limit,
// validation, request ids, logs or metrics: the gap between this and tally is what those cost.
// `node --import tsx bench/baselines/minimal-hono.ts <port> <workers> <redis-url>`.
const { port, workers } = portAndWorkers();
const redisUrl = process.argv[4] ?? "redis://127.0.0.1:6379";
inWorkers(workers, `minimal-hono listening on ${port}`, (listening) => {
  const redis = new Redis(redisUrl, { enableAutoPipelining: true });
  const app = new Hono();
  app.post("/increment", async (c) => {
    const { key, value } = await c.req.json<{ key: string; value: number }>();
    await redis.hincrby("bench:minimal-hono", key, value);
    return c.body(null, 202);
  });
  serve({ fetch: app.fetch, port, hostname: "127.0.0.1" }, listening);
});
