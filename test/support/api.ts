import { expect } from "vitest";
import { type ApiInstance, createApiInstance } from "../../api/instance.ts";
import type { Problem } from "../../api/problem.ts";
import { type Config, parseConfig } from "../../lib/config.ts";
import { connectRedis } from "../../lib/redis/client.ts";
import { mintToken } from "../../lib/tokens.ts";
import { freshDatabase, randomPrefix, sharedRedisUrl } from "../harness/fixtures.ts";
import { silentLogger } from "./logger.ts";

/** The problem+json body of an error response. */
export async function readProblem(response: Response): Promise<Problem> {
  expect(response.headers.get("content-type")).toBe("application/problem+json");
  return (await response.json()) as Problem;
}

export const TEST_SECRET = "test-only-secret-0123456789abcdef0123456789";

export interface TestApi {
  node: ApiInstance;
  config: Config;
  prefix: string;
  databaseUrl: string;
  /**
   * A token for `subject` (default: a fresh client id) with the write and read scopes unless told
   * otherwise, confined to `prefixes` when given.
   */
  token(options?: { subject?: string; scopes?: string[]; prefixes?: string[] }): Promise<string>;
  increment(body: unknown, token: string, headers?: Record<string, string>): Promise<Response>;
  close(): Promise<void>;
}

/**
 * An API node on the shared Redis (own key prefix) and a fresh database, driven through `app.request()`.
 * `env` overrides configuration the way the environment would.
 */
export async function createTestApi(env: Record<string, string> = {}): Promise<TestApi> {
  const prefix = randomPrefix();
  const database = await freshDatabase();
  const config = parseConfig({
    NODE_ENV: "test",
    REDIS_URL: sharedRedisUrl(),
    REDIS_KEY_PREFIX: prefix,
    DATABASE_URL: database.url,
    JWT_SECRET: TEST_SECRET,
    // One shard unless a test asks for more, so that tests find every increment in the one dirty hash.
    SYNC_SHARDS: "1",
    ...env,
  });
  const node = createApiInstance(config, silentLogger);
  await Promise.all([connectRedis(node.redis), connectRedis(node.writes)]);
  // What a running node does as soon as Redis is ready: /readyz waits for this first reading, and writes
  // wait for a replica until they know whether Redis has one.
  await Promise.all([node.redisMemory.check(), node.replicas.check()]);
  return {
    node,
    config,
    prefix,
    databaseUrl: database.url,
    token: (options = {}) =>
      mintToken({
        secret: TEST_SECRET,
        subject: options.subject ?? `client-${randomPrefix()}`,
        scopes: options.scopes ?? ["counters:write", "counters:read"],
        prefixes: options.prefixes,
      }),
    increment: async (body, token, headers = {}) =>
      node.app.request("/increment", {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...headers },
        body: typeof body === "string" ? body : JSON.stringify(body),
      }),
    close: async () => {
      node.redis.disconnect();
      node.writes.disconnect();
      node.replicas.stop();
      await node.pool.end();
      await database.drop();
    },
  };
}
