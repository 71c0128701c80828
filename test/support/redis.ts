import { afterAll, beforeAll } from "vitest";
import { connectRedis, createRedis, type RedisClient } from "../../lib/redis/client.ts";
import { type RedisServer, startRedis } from "../../tools/servers/redis.ts";

export interface PrivateRedis {
  readonly server: RedisServer;
  /** A client with tally's scripts, connected. */
  readonly redis: RedisClient;
}

/**
 * A Redis server of the file's (or describe block's) own, for tests that fill, stall or reconfigure it, with
 * a connected client: started before its tests, destroyed after. Read the fields inside the tests.
 */
export function usePrivateRedis(
  options: { serverArgs?: string[]; appendOnly?: boolean; commandTimeoutMs?: number } = {},
): PrivateRedis {
  let server: RedisServer | undefined;
  let redis: RedisClient | undefined;
  beforeAll(async () => {
    server = await startRedis({ appendOnly: options.appendOnly ?? false, args: options.serverArgs });
    redis = createRedis({
      url: server.url,
      name: "test-private",
      commandTimeoutMs: options.commandTimeoutMs ?? 5_000,
    });
    // Failures surface through rejected commands, not as an "error" event that fails the file.
    redis.on("error", () => {});
    await connectRedis(redis);
  });
  afterAll(async () => {
    redis?.disconnect();
    await server?.destroy();
  });
  return {
    get server() {
      if (server === undefined) throw new Error("the private Redis is only there inside the tests");
      return server;
    },
    get redis() {
      if (redis === undefined) throw new Error("the private Redis is only there inside the tests");
      return redis;
    },
  };
}
