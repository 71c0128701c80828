import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type pg from "pg";
import type { RedisClient } from "../../lib/redis/client.ts";
import { activityStreamKey, Keyspace } from "../../lib/redis/keyspace.ts";
import { Activity } from "../../syncer/activity/index.ts";
import { WebhookSender } from "../../syncer/activity/webhook.ts";
import type { Batch } from "../../syncer/batch.ts";
import { type CycleReport, Syncer } from "../../syncer/syncer.ts";
import { captureLogger, type LogLine } from "./logger.ts";

export interface Receiver {
  url: string;
  /** Parsed JSON bodies, in arrival order. */
  bodies: unknown[];
  /** Requests that arrived (answered or not). */
  requests: number;
  /** When each request arrived (performance.now()). */
  arrivals: number[];
  close(): Promise<void>;
}

/**
 * A real HTTP server on a loopback port, as a webhook receiver. `respond` answers (or, to play a hanging
 * receiver, does not); the bodies are recorded either way.
 */
export async function startReceiver(
  respond: (response: ServerResponse, request: IncomingMessage) => void,
): Promise<Receiver> {
  const receiver: Receiver = { url: "", bodies: [], requests: 0, arrivals: [], close: async () => {} };
  const server = createServer((request, response) => {
    receiver.requests += 1;
    receiver.arrivals.push(performance.now());
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      receiver.bodies.push(JSON.parse(Buffer.concat(chunks).toString("utf8")));
      respond(response, request);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  receiver.url = `http://127.0.0.1:${port}/hook`;
  receiver.close = async () => {
    // A hanging receiver holds its sockets open; cut them so close() returns.
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return receiver;
}

export interface ActivitySyncer {
  syncer: Syncer;
  activity: Activity;
  /** The captured log of both. */
  lines: LogLine[];
  /** Every cycle's report, in order. */
  cycles: CycleReport[];
  /** Every batch this syncer applied, as the activity hook saw it. */
  batches: Batch[];
  streamKey: string;
  /** Graceful stop: the syncer's last cycle, then the activity's flush; idempotent. */
  stop(webhookGraceMs?: number): Promise<void>;
}

/**
 * A real Syncer (lease, fixed-rate loop) with an Activity wired to it as syncer/process.ts wires them, on the
 * given Redis and Postgres, logging into a capture.
 */
export function startActivitySyncer(options: {
  redis: RedisClient;
  pool: pg.Pool;
  prefix: string;
  intervalMs: number;
  periodMs: number;
  stream?: { maxLen: number; trim?: "~" | "=" };
  webhook?: { url: string; timeoutMs: number; maxQueued?: number };
}): ActivitySyncer {
  const { logger, lines } = captureLogger();
  const streamKey = activityStreamKey(options.prefix);
  const activity = new Activity({
    logger,
    redis: options.redis,
    shards: 1,
    intervalMs: options.intervalMs,
    periodMs: options.periodMs,
    stream: { key: streamKey, maxLen: options.stream?.maxLen ?? 10_080, trim: options.stream?.trim },
    webhook: options.webhook ? new WebhookSender({ ...options.webhook, logger }) : undefined,
  });
  const cycles: CycleReport[] = [];
  const batches: Batch[] = [];
  const syncer = new Syncer({
    redis: options.redis,
    concurrency: 2,
    pool: options.pool,
    logger,
    keyspace: new Keyspace(options.prefix, 1),
    intervalMs: options.intervalMs,
    scanCount: 1_000,
    leaseTtlMs: 1_000,
  });
  syncer.on("batch-applied", (batch) => batches.push(batch));
  syncer.on("cycle", (report) => cycles.push(report));
  activity.watch(syncer);
  activity.start();
  syncer.start();
  let stopped: Promise<void> | undefined;
  return {
    syncer,
    activity,
    lines,
    cycles,
    batches,
    streamKey,
    stop: (webhookGraceMs = 0) => {
      stopped ??= (async () => {
        await syncer.stop();
        await activity.stop(webhookGraceMs);
      })();
      return stopped;
    },
  };
}

/** The stream's entries as objects, oldest first. */
export async function readStream(
  redis: RedisClient,
  key: string,
): Promise<{ id: string; fields: string[]; entry: Record<string, string> }[]> {
  const entries = await redis.xrange(key, "-", "+");
  return entries.map(([id, fields]) => {
    const entry: Record<string, string> = {};
    for (let i = 0; i + 1 < fields.length; i += 2) entry[fields[i] as string] = fields[i + 1] as string;
    return { id, fields: fields.filter((_, i) => i % 2 === 0), entry };
  });
}

type ActivitySyncerOptions = Omit<Parameters<typeof startActivitySyncer>[0], "redis" | "pool">;

/**
 * Activity syncers and webhook receivers for one test file, on its env's Redis and Postgres; `cleanup()`
 * (from the file's afterEach) stops them in reverse order of start.
 */
export class ActivityFixtures {
  readonly #env: { redis: RedisClient; pool: pg.Pool };
  readonly #cleanups: (() => Promise<void>)[] = [];

  constructor(env: { readonly redis: RedisClient; readonly pool: pg.Pool }) {
    this.#env = env;
  }

  run(options: ActivitySyncerOptions): ActivitySyncer {
    const running = startActivitySyncer({ redis: this.#env.redis, pool: this.#env.pool, ...options });
    this.#cleanups.push(() => running.stop());
    return running;
  }

  async receiver(respond: Parameters<typeof startReceiver>[0]): Promise<Receiver> {
    const started = await startReceiver(respond);
    this.#cleanups.push(() => started.close());
    return started;
  }

  async cleanup(): Promise<void> {
    for (const cleanup of this.#cleanups.splice(0).reverse()) await cleanup();
  }
}
