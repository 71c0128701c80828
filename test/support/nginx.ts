import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { accessSync, closeSync, constants, openSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "../../tools/servers/ports.ts";
import { waitFor } from "../harness/fixtures.ts";

// nginx with the repository's deploy/nginx/nginx.conf in front of API nodes, as compose.yaml runs it: only
// the upstream addresses and the listen address differ.

const NGINX_DIR = fileURLToPath(new URL("../../deploy/nginx/", import.meta.url));

/** One line of the tally_json access log (only the fields the test reads). */
export interface AccessEntry {
  msec: number;
  request_id: string;
  method: string;
  uri: string;
  status: number;
  upstream_addr: string;
}

export interface Nginx {
  url: string;
  /** The error log so far (nginx's stderr), one line each. */
  errorLines: string[];
  /** Graceful stop (SIGQUIT flushes the buffered access log), SIGKILL after 5 s; then the access log. */
  stop(): Promise<AccessEntry[]>;
}

function isAccessEntry(value: unknown): value is AccessEntry {
  if (typeof value !== "object" || value === null) return false;
  const entry = value as Record<string, unknown>;
  return (
    typeof entry.msec === "number" &&
    typeof entry.request_id === "string" &&
    typeof entry.status === "number" &&
    typeof entry.upstream_addr === "string"
  );
}

/** Every node nginx tried, in order ("a:1, b:2" after a refused connection to a:1). */
export function upstreams(entry: AccessEntry): string[] {
  return entry.upstream_addr.split(/\s*[,:]\s+/);
}

/** The node that answered: the last one nginx tried. */
export function finalUpstream(entry: AccessEntry): string | undefined {
  return upstreams(entry).at(-1);
}

function findNginx(): string {
  // Debian keeps nginx in /usr/sbin, which is not on a non-root user's PATH.
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter), "/usr/sbin", "/usr/local/sbin"];
  for (const dir of dirs.filter(Boolean)) {
    const candidate = path.join(dir, "nginx");
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not here.
    }
  }
  throw new Error("this test needs the nginx binary; install it with: apt-get install nginx");
}

function findSetpriv(): string | undefined {
  try {
    accessSync("/usr/bin/setpriv", constants.X_OK);
    return "/usr/bin/setpriv";
  } catch {
    return undefined;
  }
}

/**
 * The parameters of compose's `server` line (max_fails, fail_timeout), which the test gives each of its own
 * addresses, minus `resolve`: that needs a DNS name (and nginx ≥ 1.27.3).
 */
export async function composeServerParameters(): Promise<string[]> {
  const compose = await readFile(path.join(NGINX_DIR, "compose/upstream.conf"), "utf8");
  const line = compose.split("\n").find((text) => /^\s*server\s/.test(text));
  if (line === undefined) throw new Error("no `server` line in deploy/nginx/compose/upstream.conf");
  return line
    .replace(/;.*$/, "")
    .trim()
    .split(/\s+/)
    .slice(2)
    .filter((parameter) => parameter !== "resolve");
}

/** fail_timeout in milliseconds (nginx's default is 10 s). */
export function failTimeoutOf(parameters: string[]): number {
  const parameter = parameters.find((text) => text.startsWith("fail_timeout="));
  if (parameter === undefined) return 10_000;
  const seconds = /^fail_timeout=(\d+)s?$/.exec(parameter)?.[1];
  if (seconds === undefined) throw new Error(`write ${parameter} in seconds (e.g. fail_timeout=10s)`);
  return Number(seconds) * 1_000;
}

async function upstreamServers(apiUrls: string[]): Promise<string> {
  const parameters = (await composeServerParameters()).join(" ");
  return apiUrls.map((url) => `server ${new URL(url).host} ${parameters};\n`).join("");
}

/** nginx with the repository's nginx.conf, in the foreground, as this user, in a temp directory. */
export async function startNginx(apiUrls: string[]): Promise<Nginx> {
  const binary = findNginx();
  const dir = await mkdtemp(path.join(os.tmpdir(), "tally-test-nginx-"));
  // Workers run as another user when nginx starts as root; they must reach their temp directories.
  await chmod(dir, 0o755);
  const port = await freePort();
  // A link, not a copy: nginx reads the repository's file itself, and resolves its includes (tally.d/…)
  // next to the path it was given, i.e. here.
  await symlink(path.join(NGINX_DIR, "nginx.conf"), path.join(dir, "nginx.conf"));
  await mkdir(path.join(dir, "tally.d"));
  await mkdir(path.join(dir, "temp"));
  await writeFile(path.join(dir, "tally.d/upstream.conf"), await upstreamServers(apiUrls));
  // Temp paths set per server replace the compiled-in ones (/var/lib/nginx/…), which nginx would otherwise
  // create at start-up and a non-root user cannot.
  const temp = (name: string) => `${name}_temp_path ${path.join(dir, "temp", name)};\n`;
  await writeFile(
    path.join(dir, "tally.d/server.conf"),
    `listen 127.0.0.1:${port};\n${["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map(temp).join("")}`,
  );

  // biome-ignore format: one flag and its value per line
  const args = [
    "-e", "stderr",
    "-p", `${dir}/`,
    "-c", path.join(dir, "nginx.conf"),
    "-g", `daemon off; pid ${path.join(dir, "nginx.pid")};`,
  ];
  // If this test process is SIGKILLed, the kernel kills the master too (the exit hook below cannot run).
  const setpriv = findSetpriv();
  const [command, commandArgs] = setpriv
    ? [setpriv, ["--pdeathsig", "KILL", "--", binary, ...args]]
    : [binary, args];
  // The access log goes to /dev/stdout, which nginx opens by name: that works on a file or a pipe (a
  // container's stdout) but not on the socket Node's "pipe" would be (ENXIO). So stdout is a file.
  const accessLog = path.join(dir, "access.log");
  const stdout = openSync(accessLog, "a");
  let child: ChildProcess;
  try {
    // Its own process group, so that one kill takes the master and its workers.
    child = spawn(command, commandArgs, { detached: true, stdio: ["ignore", stdout, "pipe"] });
  } finally {
    closeSync(stdout);
  }
  const closed = once(child, "close");
  // Reported through the start-up check below rather than as an uncaught "error" event.
  child.on("error", () => {});
  const killGroup = () => {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  };
  process.on("exit", killGroup);

  const errorLines: string[] = [];
  let buffered = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    buffered += chunk.toString("utf8");
    const lines = buffered.split("\n");
    buffered = lines.pop() ?? "";
    errorLines.push(...lines.filter((line) => line.trim() !== ""));
  });

  let stopped: Promise<AccessEntry[]> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGQUIT");
      const timer = setTimeout(killGroup, 5_000);
      await closed;
      clearTimeout(timer);
      // Workers still finishing after the master exited would hold the port.
      killGroup();
      process.off("exit", killGroup);
      const lines = (await readFile(accessLog, "utf8")).split("\n").filter((line) => line.trim() !== "");
      await rm(dir, { recursive: true, force: true });
      return lines.map((line) => JSON.parse(line) as unknown).filter(isAccessEntry);
    })();
    return stopped;
  };

  const url = `http://127.0.0.1:${port}`;
  try {
    // A bad configuration ends nginx at once; say why instead of waiting out the timeout.
    const exitedEarly = closed.then(() => {
      throw new Error(`nginx exited during start-up:\n${errorLines.join("\n")}`);
    });
    exitedEarly.catch(() => {});
    await Promise.race([
      waitFor(async () => (await fetch(`${url}/healthz`)).ok, {
        message: "nginx never answered /healthz through an API node",
      }),
      exitedEarly,
    ]);
  } catch (error) {
    await stop();
    throw error;
  }
  return { url, errorLines, stop };
}
