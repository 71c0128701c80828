import net from "node:net";
import path from "node:path";
import { Redis } from "ioredis";
import { RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES } from "../../lib/redis/hash-encoding.ts";
import { findRedisServer } from "./binaries.ts";
import { ChildServer, firstStart, waitUntilReady } from "./child-server.ts";
import { freePort } from "./ports.ts";
import { makeTempDir, removeDir } from "./temp-dirs.ts";

export interface RedisServer {
  readonly port: number;
  /** redis://127.0.0.1:<port> */
  readonly url: string;
  readonly dataDir: string;
  /** Clean shutdown (SIGTERM: redis flushes the AOF), waits for exit. No-op when not running. */
  stop(): Promise<void>;
  /** kill -9, waits for exit. No-op when not running. */
  kill(): Promise<void>;
  /** Sends `signal` to the server: SIGSTOP pauses it (a replica that falls behind), SIGCONT resumes it. */
  signal(signal: NodeJS.Signals): void;
  /** Starts again on the same port and data dir (so AOF contents are reloaded); waits until it answers PING. No-op when running. */
  start(): Promise<void>;
  /** Kills it if running and deletes the data dir, unless it was given one to keep. */
  destroy(): Promise<void>;
}

export function redisPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    let reply = "";
    const socket = net.connect({ host: "127.0.0.1", port });
    const finish = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => finish(false));
    socket.once("error", () => finish(false));
    socket.once("connect", () => socket.write("*1\r\n$4\r\nPING\r\n"));
    // While loading the AOF redis answers -LOADING, which is exactly "not ready yet".
    socket.on("data", (chunk) => {
      reply += chunk.toString("latin1");
      if (reply.includes("\r\n")) finish(reply.startsWith("+PONG"));
    });
  });
}

/** One command on a fresh connection that never retries, so a dead or loading server fails fast. */
export async function redisCommand(port: number, command: string, ...args: string[]): Promise<unknown> {
  const client = new Redis({
    host: "127.0.0.1",
    port,
    lazyConnect: true,
    connectTimeout: 1_000,
    commandTimeout: 2_000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    // The ready check would wait out an AOF load; a -LOADING error is the "not yet" a caller wants instead.
    enableReadyCheck: false,
  });
  // Failures surface through the rejected command; the event would only be noise.
  client.on("error", () => {});
  try {
    await client.connect();
    return await client.call(command, ...args);
  } finally {
    client.disconnect();
  }
}

/** What docs/operations.md recommends beyond durability, as compose.yaml runs it: every harness Redis has it. */
export const TALLY_REDIS_SETTINGS = [
  "--hash-max-listpack-entries",
  String(RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES),
];

export async function startRedis(
  options: {
    appendOnly?: boolean;
    args?: string[];
    /** Another server binary that speaks Redis, e.g. valkey-server (default: redis-server from PATH). */
    binary?: string;
    /** A data directory to keep (never deleted); by default a temporary one, deleted by destroy(). */
    dataDir?: string;
    /** Default: a free port. */
    port?: number;
  } = {},
): Promise<RedisServer> {
  const redisServer = options.binary ?? findRedisServer();
  const kept = options.dataDir !== undefined;
  const dataDir = options.dataDir ?? (await makeTempDir("redis"));
  const port = options.port ?? (await freePort());
  const redisLog = path.join(dataDir, "redis.log");
  const stdioLog = path.join(dataDir, "redis.stdio.log");
  const logs = [stdioLog, redisLog];
  const server = new ChildServer({
    name: `redis-server on port ${port}`,
    command: redisServer,
    // biome-ignore format: one flag and its value per line
    args: [
      "--port", String(port),
      "--bind", "127.0.0.1",
      "--dir", dataDir,
      "--save", "",
      "--appendonly", options.appendOnly === false ? "no" : "yes",
      "--appendfsync", "everysec",
      ...TALLY_REDIS_SETTINGS,
      "--daemonize", "no",
      "--logfile", redisLog,
      ...(options.args ?? []),
    ],
    cwd: dataDir,
    logFile: stdioLog,
    owner: undefined,
  });

  const start = async () => {
    if (server.running) return;
    server.spawn();
    await waitUntilReady(server, () => redisPing(port), logs);
  };
  const handle: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    dataDir,
    stop: () => server.stop("SIGTERM"),
    kill: () => server.kill(),
    signal: (signal) => server.signal(signal),
    start,
    destroy: async () => {
      await server.kill();
      if (!kept) await removeDir(dataDir);
    },
  };
  return firstStart(handle);
}
