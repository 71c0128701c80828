import { loadConfigOrExit } from "../lib/config.ts";
import { startOrExit } from "../lib/exit.ts";
import { createLogger } from "../lib/logger.ts";
import { prepareDatabase } from "../lib/postgres/prepare.ts";

// `npm run migrate`: waits for Postgres (up to MIGRATE_WAIT_S), creates the database if needed and applies
// pending migrations. Safe to run from several processes at once (they serialise on an advisory lock).
const config = loadConfigOrExit();
const logger = createLogger({ level: config.logLevel, role: "migrate" });
await startOrExit(logger, async () => {
  const applied = await prepareDatabase(config.database.url, { logger, waitMs: config.database.waitMs });
  logger.info({ applied }, applied.length ? "migrations applied" : "schema up to date");
});
