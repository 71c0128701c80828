import { type ChildProcess, spawn } from "node:child_process";
import { appendFileSync, closeSync, openSync } from "node:fs";
import { open } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { atExit } from "./at-exit.ts";
import { findOnPath } from "./binaries.ts";
import {
  descendantsOf,
  signalQuietly,
  waitForProcessesGone,
  waitForProcessGroupGone,
} from "./process-tree.ts";

/**
 * A server binary (redis-server, postgres, initdb) run as a child of the test process, in a process group of
 * its own, with its output in a log file: what the harness starts, signals, kills and starts again.
 */

const READY_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 30_000;
const POLL_INTERVAL_MS = 50;

/** The OS user a server runs as, when not as this process' own. */
export interface Owner {
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

const liveServers = new Set<ChildServer>();
const killLiveServers = () => {
  for (const server of liveServers) server.killGroupNow();
};

// The exit hook cannot run when this process is SIGKILLed (e.g. a worker the test runner kills), so where
// util-linux's setpriv exists, the server also gets a parent-death signal from the kernel.
let setprivPath: string | null | undefined;
function withParentDeathSignal(command: string, args: string[]): [string, string[]] {
  if (setprivPath === undefined) setprivPath = process.platform === "linux" ? findOnPath("setpriv") : null;
  if (!setprivPath) return [command, args];
  return [setprivPath, ["--pdeathsig", "KILL", "--", command, ...args]];
}

export class ChildServer {
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
    atExit(killLiveServers);
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
      liveServers.add(this);
      this.#exited = new Promise((resolve) => {
        const done = (description: string) => {
          if (this.#running) this.#exitDescription = description;
          this.#running = false;
          liveServers.delete(this);
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

export async function waitUntilReady(server: ChildServer, probe: () => Promise<boolean>, logs: string[]) {
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

/** Starts a new server for the first time; one that does not come up is cleaned away before the error. */
export async function firstStart<T extends { start(): Promise<void>; destroy(): Promise<void> }>(
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
