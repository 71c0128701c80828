import type pg from "pg";
import { migrate } from "../lib/postgres/migrate.ts";
import { createPool } from "../lib/postgres/pool.ts";
import { type PostgresServer, startPostgres } from "../tools/servers/postgres.ts";
import { type RedisServer, startRedis } from "../tools/servers/redis.ts";

/** A benchmark's throwaway Redis and migrated Postgres, and a pool on it; `cleanups` gets their teardown. */
export async function startBenchStores(
  applicationName: string,
  cleanups: (() => Promise<unknown>)[],
): Promise<{ redisServer: RedisServer; postgresServer: PostgresServer; databaseUrl: string; pool: pg.Pool }> {
  const [redisServer, postgresServer] = await Promise.all([startRedis(), startPostgres()]);
  cleanups.push(
    () => redisServer.destroy(),
    () => postgresServer.destroy(),
  );
  const databaseUrl = postgresServer.url("postgres");
  const pool = createPool({ connectionString: databaseUrl, applicationName, max: 2 });
  cleanups.push(() => pool.end());
  await migrate(pool);
  return { redisServer, postgresServer, databaseUrl, pool };
}
