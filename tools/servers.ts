import { type ChildProcess, execFile, spawn } from "node:child_process";
import {
  accessSync,
  appendFileSync,
  closeSync,
  constants,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
} from "node:fs";
import { chmod, chown, mkdir, mkdtemp, open, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { migrate } from "../lib/postgres/migrate.ts";
import { createPool } from "../lib/postgres/pool.ts";

const READY_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 30_000;
const POLL_INTERVAL_MS = 50;
const INSTALL_HINT = "install them with: apt-get install redis-server postgresql";

const execFileAsync = promisify(execFile);
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface RedisServer {
  readonly port: number;
  /** redis://127.0.0.1:<port> */
  readonly url: string;
  readonly dataDir: string;
  /** Clean shutdown (SIGTERM: redis flushes the AOF), waits for exit. No-op when not running. */
  stop(): Promise<void>;
  /** kill -9, waits for exit. No-op when not running. */
  kill(): Promise<void>;
  /** Sends `signal` to the server: SIGSTOP pauses it (a replica that falls behind), SIGCONT resumes it. */
  signal(signal: NodeJS.Signals): void;
  /** Starts again on the same port and data dir (so AOF contents are reloaded); waits until it answers PING. No-op when running. */
  start(): Promise<void>;
  /** Kills it if running and deletes the data dir. */
  destroy(): Promise<void>;
}

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
  /** Kills it if running and deletes the data dir. */
  destroy(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === "object") resolve(address.port);
        else reject(new Error(`unexpected server address ${String(address)}`));
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------------------
// Process bookkeeping (exported so that redis-cluster.ts shares it, exit hook included)

interface Owner {
  uid: number;
  gid: number;
}

export interface ProcessSpec {
  name: string;
  command: string;
  args: string[];
  cwd: string;
  logFile: string;
  owner: Owner | undefined;
}

const liveProcesses = new Set<ServerProcess>();
const liveDirs = new Set<string>();
let exitHookInstalled = false;

// A test run that crashes or forgets a teardown must not leave servers (and their temp dirs) behind.
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const server of liveProcesses) server.killGroupNow();
    for (const dir of liveDirs) {
      try {
        rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
      } catch {
        // Best effort: the process is exiting anyway.
      }
    }
  });
}

// The exit hook cannot run when this process is SIGKILLed (e.g. a worker the test runner kills), so where
// util-linux's setpriv exists, the server also gets a parent-death signal from the kernel.
let setprivPath: string | null | undefined;
function withParentDeathSignal(command: string, args: string[]): [string, string[]] {
  if (setprivPath === undefined) setprivPath = process.platform === "linux" ? findOnPath("setpriv") : null;
  if (!setprivPath) return [command, args];
  return [setprivPath, ["--pdeathsig", "KILL", "--", command, ...args]];
}

export class ServerProcess {
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  #running = false;
  #exitDescription = "not started";

  constructor(readonly spec: ProcessSpec) {}

  get running(): boolean {
    return this.#running;
  }

  get exitDescription(): string {
    return this.#exitDescription;
  }

  spawn(): void {
    if (this.#running) return;
    installExitHook();
    const log = openSync(this.spec.logFile, "a");
    try {
      const [command, args] = withParentDeathSignal(this.spec.command, this.spec.args);
      const child = spawn(command, args, {
        cwd: this.spec.cwd,
        // Its own process group, so kill() takes down postgres backends / redis fork children too.
        detached: true,
        stdio: ["ignore", log, log],
        ...(this.spec.owner ? { uid: this.spec.owner.uid, gid: this.spec.owner.gid } : {}),
      });
      this.#child = child;
      this.#running = true;
      this.#exitDescription = "running";
      liveProcesses.add(this);
      this.#exited = new Promise((resolve) => {
        const done = (description: string) => {
          if (this.#running) this.#exitDescription = description;
          this.#running = false;
          liveProcesses.delete(this);
          resolve();
        };
        child.once("exit", (code, signal) => done(signal ? `killed by ${signal}` : `exit code ${code}`));
        child.once("error", (error) => {
          appendFileSync(this.spec.logFile, `[harness] spawn ${command} failed: ${error.message}\n`);
          done(`spawn failed: ${error.message}`);
        });
      });
      // A forgotten server must not keep the test process alive; the exit hook kills it.
      child.unref();
    } finally {
      closeSync(log);
    }
  }

  /** Signals only the server's main process, which coordinates its own shutdown. */
  signal(signal: NodeJS.Signals): void {
    const pid = this.#child?.pid;
    if (!this.#running || pid === undefined) return;
    try {
      process.kill(pid, signal);
    } catch {
      // Already gone.
    }
  }

  /**
   * SIGKILLs the server and every process it forked. Killing the process group is not enough: Postgres
   * backends call setsid() and leave it, and a backend that outlives its postmaster by a few milliseconds
   * can still COMMIT. The main process is stopped first so that it cannot fork while we collect its tree.
   */
  killGroupNow(): void {
    const pid = this.#child?.pid;
    if (pid === undefined) return;
    signalQuietly(pid, "SIGSTOP");
    const tree = [pid, ...descendantsOf(pid)];
    signalQuietly(-pid, "SIGKILL");
    for (const member of tree) signalQuietly(member, "SIGKILL");
    this.#killedTree = tree;
  }

  #killedTree: number[] = [];

  async waitForExit(timeoutMs: number): Promise<boolean> {
    if (!this.#running) return true;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    try {
      return await Promise.race([this.#exited.then(() => true as const), timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  async kill(): Promise<void> {
    const pid = this.#child?.pid;
    if (!this.#running || pid === undefined) return;
    this.killGroupNow();
    // An unref'd child alone does not keep the event loop alive while we await its exit.
    this.#child?.ref();
    try {
      await this.#exited;
    } finally {
      this.#child?.unref();
    }
    await waitForProcessGroupGone(pid);
    await waitForProcessesGone(this.#killedTree);
  }

  async stop(signal: NodeJS.Signals): Promise<void> {
    if (!this.#running) return;
    this.signal(signal);
    if (!(await this.waitForExit(STOP_TIMEOUT_MS))) await this.kill();
  }
}

// The group leader exits first; a postgres restarted while killed backends still hold the old shared memory
// refuses to start, so wait (briefly: unreaped zombies also count as group members) for the rest.
async function waitForProcessGroupGone(pgid: number): Promise<void> {
  const deadline = Date.now() + 2_000;
  while (Date.now() < deadline) {
    try {
      process.kill(-pgid, 0);
    } catch {
      return;
    }
    await sleep(10);
  }
}

function signalQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

/** Starts a new server for the first time; one that does not come up is cleaned away before the error. */
async function firstStart<T extends { start(): Promise<void>; destroy(): Promise<void> }>(
  handle: T,
): Promise<T> {
  try {
    await handle.start();
  } catch (error) {
    await handle.destroy();
    throw error;
  }
  return handle;
}

/** Every live descendant of `root`, from /proc (Linux). */
function descendantsOf(root: number): number[] {
  const parentOf = new Map<number, number>();
  let entries: string[] = [];
  try {
    entries = readdirSync("/proc");
  } catch {
    return [];
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // The command name (field 2) may contain spaces and parentheses; the fields after its last ")" do not.
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parentOf.set(Number(entry), ppid);
    } catch {
      // Exited while we looked.
    }
  }
  const found: number[] = [];
  const frontier = [root];
  while (frontier.length > 0) {
    const parent = frontier.pop();
    for (const [pid, ppid] of parentOf) {
      if (ppid === parent) {
        found.push(pid);
        frontier.push(pid);
      }
    }
  }
  return found;
}

async function waitForProcessesGone(pids: number[]): Promise<void> {
  const deadline = Date.now() + 2_000;
  for (const pid of pids) {
    while (Date.now() < deadline) {
      try {
        process.kill(pid, 0);
      } catch {
        break;
      }
      // A killed child of ours is a zombie until reaped; one that is not ours (a backend) disappears.
      if (readProcessState(pid) === "Z") break;
      await sleep(10);
    }
  }
}

function readProcessState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
  } catch {
    return undefined;
  }
}

export async function waitUntilReady(server: ServerProcess, probe: () => Promise<boolean>, logs: string[]) {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (!server.running) {
      throw new Error(
        `${server.spec.name} exited during startup (${server.exitDescription})${await logTails(logs)}`,
      );
    }
    if (await probe()) return;
    if (Date.now() >= deadline) {
      await server.kill();
      throw new Error(
        `${server.spec.name} did not become ready within ${READY_TIMEOUT_MS / 1000} s${await logTails(logs)}`,
      );
    }
    await sleep(POLL_INTERVAL_MS);
  }
}

export async function logTails(files: string[]): Promise<string> {
  const parts: string[] = [];
  for (const file of files) {
    try {
      const handle = await open(file, "r");
      try {
        const { size } = await handle.stat();
        const length = Math.min(size, 4_096);
        const buffer = Buffer.alloc(length);
        await handle.read(buffer, 0, length, size - length);
        const lines = buffer.toString("utf8").trimEnd().split("\n").slice(-30);
        parts.push(`\n--- tail of ${file} ---\n${lines.join("\n")}`);
      } finally {
        await handle.close();
      }
    } catch (error) {
      // A server that died early may not have created its log yet.
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") parts.push(`\n--- ${file}: not readable ---`);
    }
  }
  return parts.join("");
}

// ---------------------------------------------------------------------------------------------------------
// Binaries, users, directories

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export function findOnPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  return null;
}

export function missingBinaries(what: string): Error {
  return new Error(`the test harness needs ${what} but could not find it on PATH; ${INSTALL_HINT}`);
}

export function findRedisServer(): string {
  const found = findOnPath("redis-server");
  if (!found) throw missingBinaries("redis-server");
  return found;
}

function findPostgresBinaries(): { initdb: string; postgres: string } {
  const initdb = findOnPath("initdb");
  const postgres = findOnPath("postgres");
  if (initdb && postgres) return { initdb, postgres };
  // Debian/Ubuntu keep the server binaries off PATH, one directory per major version.
  const root = "/usr/lib/postgresql";
  let versions: string[] = [];
  try {
    versions = readdirSync(root).filter((entry) => /^\d+(\.\d+)?$/.test(entry));
  } catch {
    // No Debian-style install.
  }
  versions.sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a));
  for (const version of versions) {
    const bin = path.join(root, version, "bin");
    const candidate = { initdb: path.join(bin, "initdb"), postgres: path.join(bin, "postgres") };
    if (isExecutable(candidate.initdb) && isExecutable(candidate.postgres)) return candidate;
  }
  throw missingBinaries(`PostgreSQL server binaries (initdb, postgres; also looked in ${root}/<N>/bin)`);
}

let postgresOwnerPromise: Promise<Owner | undefined> | undefined;

// Postgres refuses to run as root, so as root it runs as the `postgres` OS user that the package creates.
function postgresOwner(): Promise<Owner | undefined> {
  postgresOwnerPromise ??= (async () => {
    if (process.getuid?.() !== 0) return undefined;
    try {
      const uid = Number((await execFileAsync("id", ["-u", "postgres"])).stdout.trim());
      const gid = Number((await execFileAsync("id", ["-g", "postgres"])).stdout.trim());
      if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error("unparsable output of id");
      return { uid, gid };
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new Error(
        `running as root, so postgres must run as the "postgres" OS user, but looking it up failed ` +
          `(${reason}); ${INSTALL_HINT}`,
        { cause: error },
      );
    }
  })();
  return postgresOwnerPromise;
}

export async function makeTempDir(kind: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `tally-test-${kind}-`));
  liveDirs.add(dir);
  return dir;
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  liveDirs.delete(dir);
}

// ---------------------------------------------------------------------------------------------------------
// Redis

export function redisPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    let reply = "";
    const socket = net.connect({ host: "127.0.0.1", port });
    const finish = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => finish(false));
    socket.once("error", () => finish(false));
    socket.once("connect", () => socket.write("*1\r\n$4\r\nPING\r\n"));
    // While loading the AOF redis answers -LOADING, which is exactly "not ready yet".
    socket.on("data", (chunk) => {
      reply += chunk.toString("latin1");
      if (reply.includes("\r\n")) finish(reply.startsWith("+PONG"));
    });
  });
}

export async function startRedis(
  options: {
    appendOnly?: boolean;
    args?: string[];
    /** Another server binary that speaks Redis, e.g. valkey-server (default: redis-server from PATH). */
    binary?: string;
  } = {},
): Promise<RedisServer> {
  const redisServer = options.binary ?? findRedisServer();
  const dataDir = await makeTempDir("redis");
  const port = await freePort();
  const redisLog = path.join(dataDir, "redis.log");
  const stdioLog = path.join(dataDir, "redis.stdio.log");
  const logs = [stdioLog, redisLog];
  const server = new ServerProcess({
    name: `redis-server on port ${port}`,
    command: redisServer,
    // biome-ignore format: one flag and its value per line
    args: [
      "--port", String(port),
      "--bind", "127.0.0.1",
      "--dir", dataDir,
      "--save", "",
      "--appendonly", options.appendOnly === false ? "no" : "yes",
      "--appendfsync", "everysec",
      "--daemonize", "no",
      "--logfile", redisLog,
      ...(options.args ?? []),
    ],
    cwd: dataDir,
    logFile: stdioLog,
    owner: undefined,
  });

  const start = async () => {
    if (server.running) return;
    server.spawn();
    await waitUntilReady(server, () => redisPing(port), logs);
  };
  const handle: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    dataDir,
    stop: () => server.stop("SIGTERM"),
    kill: () => server.kill(),
    signal: (signal) => server.signal(signal),
    start,
    destroy: async () => {
      await server.kill();
      await removeDir(dataDir);
    },
  };
  return firstStart(handle);
}

// ---------------------------------------------------------------------------------------------------------
// Postgres

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
  const initdbProcess = new ServerProcess({
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

export async function startPostgres(): Promise<PostgresServer> {
  const binaries = findPostgresBinaries();
  const owner = await postgresOwner();
  const baseDir = await makeTempDir("pg");
  const dataDir = path.join(baseDir, "data");
  const socketDir = path.join(baseDir, "socket");
  const logFile = path.join(baseDir, "postgres.log");

  try {
    await mkdir(socketDir);
    if (owner) {
      for (const dir of [baseDir, socketDir]) {
        await chown(dir, owner.uid, owner.gid);
        await chmod(dir, 0o700);
      }
    }
    await runInitdb(binaries.initdb, baseDir, dataDir, owner);
  } catch (error) {
    await removeDir(baseDir);
    throw error;
  }

  const port = await freePort();
  const server = new ServerProcess({
    name: `postgres on port ${port}`,
    command: binaries.postgres,
    // Durability settings only give up fsync (the OS page cache survives a process kill); never
    // synchronous_commit=off, because tests kill -9 postgres and rely on committed transactions surviving.
    // biome-ignore format: one flag and its value per line
    args: [
      "-D", dataDir,
      "-p", String(port),
      "-k", socketDir,
      "-c", "listen_addresses=127.0.0.1",
      "-c", "fsync=off",
      "-c", "full_page_writes=off",
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
      await removeDir(baseDir);
    },
  };
  return firstStart(handle);
}
