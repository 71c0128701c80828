import pg from "pg";
import type { TestProject } from "vitest/node";
import { migrate } from "../../lib/postgres/migrate.ts";
import { createPool } from "../../lib/postgres/pool.ts";
import { type PostgresServer, startPostgres } from "../../tools/servers/postgres.ts";
import { type RedisServer, startRedis } from "../../tools/servers/redis.ts";

declare module "vitest" {
  export interface ProvidedContext {
    redisUrl: string;
    postgresUrl: string;
  }
}

// Also named in fixtures.ts, which cannot import this file (it runs in the main process, fixtures in workers).
const TEMPLATE_DATABASE = "tally_template";

async function createTemplate(postgres: PostgresServer): Promise<void> {
  const admin = new pg.Client({ connectionString: postgres.url() });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${TEMPLATE_DATABASE}`);
  } finally {
    await admin.end();
  }

  const pool = createPool({
    connectionString: postgres.url(TEMPLATE_DATABASE),
    applicationName: "test-harness",
  });
  try {
    await migrate(pool);
  } finally {
    await pool.end();
  }

  // CREATE DATABASE ... TEMPLATE fails while anyone is connected to the template, so a test that connects
  // to it by mistake would break every freshDatabase() call; refuse such connections instead.
  const lock = new pg.Client({ connectionString: postgres.url() });
  await lock.connect();
  try {
    await lock.query(`ALTER DATABASE ${TEMPLATE_DATABASE} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false`);
  } finally {
    await lock.end();
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  let redis: RedisServer | undefined;
  let postgres: PostgresServer | undefined;
  const teardown = async () => {
    await Promise.all([redis?.destroy(), postgres?.destroy()]);
  };
  try {
    // Shared servers are never killed by tests (those start private ones), so redis can skip the AOF.
    [redis, postgres] = await Promise.all([startRedis({ appendOnly: false }), startPostgres()]);
    await createTemplate(postgres);
  } catch (error) {
    await teardown();
    throw error;
  }
  project.provide("redisUrl", redis.url);
  project.provide("postgresUrl", postgres.url());
  return teardown;
}
