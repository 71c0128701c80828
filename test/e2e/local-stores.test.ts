import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../lib/config.ts";
import { Shutdown } from "../../lib/shutdown.ts";
import { startLocalStores } from "../../scripts/local-stores.ts";
import { freePort } from "../../tools/servers/ports.ts";
import { silentLogger } from "../support/logger.ts";

// What npm start does about stores the environment does not name (local-start.test.ts runs it whole). Here
// the "default" addresses are free ports, so the rules can be checked beside the servers this machine runs.

const dataDir = await mkdtemp(path.join(os.tmpdir(), "tally-local-stores-"));
afterAll(() => rm(dataDir, { recursive: true, force: true }));

function refuses(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", (error: NodeJS.ErrnoException) => resolve(error.code === "ECONNREFUSED"));
  });
}

describe("npm start's local stores", () => {
  it("never start in place of a URL the user set, even one nothing answers", async () => {
    const [postgresPort, redisPort] = [await freePort(), await freePort()];
    const env = {
      DATABASE_URL: `postgres://postgres@127.0.0.1:${postgresPort}/tally`,
      REDIS_URL: `redis://127.0.0.1:${redisPort}`,
    };
    const shutdown = new Shutdown(silentLogger, 5_000);
    await startLocalStores({ env, config: parseConfig(env), dataDir, logger: silentLogger, shutdown });
    expect(await refuses(postgresPort)).toBe(true);
    expect(await refuses(redisPort)).toBe(true);
    await shutdown.run();
  });

  it("say in one line how to install redis-server when it is needed and missing", async () => {
    const redisPort = await freePort();
    const env = { DATABASE_URL: "postgres://postgres@127.0.0.1:5432/tally" };
    const config = parseConfig({ ...env, REDIS_URL: `redis://127.0.0.1:${redisPort}` });
    const path = process.env.PATH;
    process.env.PATH = "/nonexistent";
    try {
      await expect(
        startLocalStores({
          env,
          config,
          dataDir,
          logger: silentLogger,
          shutdown: new Shutdown(silentLogger, 5_000),
        }),
      ).rejects.toThrow(
        `nothing answers at 127.0.0.1:${redisPort} and there is no redis-server on PATH to start: install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis), or set REDIS_URL`,
      );
    } finally {
      process.env.PATH = path;
    }
  });
});
