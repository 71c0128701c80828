import { loadConfigOrExit } from "../lib/config.ts";
import { createLogger } from "../lib/logger.ts";
import { migrate } from "../lib/postgres/migrate.ts";
import { createPool, ensureDatabase } from "../lib/postgres/pool.ts";

// `npm run migrate`: creates the database if needed and applies pending migrations. Safe to run from
// several processes at once (they serialise on an advisory lock).
const config = loadConfigOrExit();
const logger = createLogger({ level: config.logLevel, role: "migrate" });
await ensureDatabase(config.database.url);
const pool = createPool({ connectionString: config.database.url, applicationName: "tally-migrate", max: 1 });
try {
  const applied = await migrate(pool);
  logger.info({ applied }, applied.length ? "migrations applied" : "schema up to date");
} finally {
  await pool.end();
}
