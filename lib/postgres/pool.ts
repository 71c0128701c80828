import pg from "pg";

// bigint and numeric arrive as strings by default; counters can exceed 2^53, so read them as BigInt.
const INT8_OID = 20;
pg.types.setTypeParser(INT8_OID, (text) => BigInt(text));

export interface PoolOptions {
  connectionString: string;
  max?: number;
  applicationName: string;
  /** Upper bound on any single statement, so an unhealthy Postgres fails fast instead of hanging work. */
  statementTimeoutMs?: number;
  /** An idle client lost its connection (Postgres restarted); the pool replaces it on next use. */
  onError?: (error: Error) => void;
}

export function createPool(options: PoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: options.connectionString,
    max: options.max ?? 4,
    application_name: options.applicationName,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    statement_timeout: options.statementTimeoutMs ?? 60_000,
  });
  // Without a listener this event would crash the process.
  pool.on("error", options.onError ?? (() => {}));
  return pool;
}

/** Creates the database named in the URL when it does not exist yet, so a first `npm start` just works. */
export async function ensureDatabase(connectionString: string): Promise<void> {
  const url = new URL(connectionString);
  const database = decodeURIComponent(url.pathname.slice(1));
  if (!database) return;
  url.pathname = "/postgres";
  const client = new pg.Client({ connectionString: url.toString() });
  await client.connect();
  try {
    const { rowCount } = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [database]);
    if (rowCount) return;
    await client.query(`CREATE DATABASE ${client.escapeIdentifier(database)}`);
  } catch (error) {
    // Another process created it between our check and our CREATE.
    if ((error as { code?: string }).code !== "42P04") throw error;
  } finally {
    await client.end();
  }
}
