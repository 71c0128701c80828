import { execFile, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface LoadOptions {
  url: string;
  token: string;
  connections: number;
  durationS: number;
  keys: number;
  /** The same body in every request (a batch for POST /increments); by default increments over `keys`. */
  body?: string;
  /** Which generator; by default wrk when installed, else autocannon. */
  tool?: "wrk" | "autocannon";
}

export interface LoadResult {
  tool: "wrk" | "autocannon";
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  /** Non-2xx answers plus socket errors and timeouts. */
  errors: number;
  /**
   * Cores the load generator itself kept busy (its CPU time over the run's wall time): on a machine it shares
   * with the service, what it takes is not the service's.
   */
  generatorCores: number;
}

/**
 * Runs a load generator to its end, sampling its CPU time from /proc while it runs; rejects when it exits
 * with a code not in `exitCodes`.
 */
export function runSampled(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  exitCodes: readonly number[] = [0],
): Promise<{ stdout: string; generatorCores: number; exitCode: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let cpuSeconds = 0;
    const sample = () => {
      try {
        const stat = readFileSync(`/proc/${child.pid}/stat`, "utf8");
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        // utime and stime, in clock ticks (100 per second on Linux).
        cpuSeconds = (Number(fields[11]) + Number(fields[12])) / 100;
      } catch {
        // Exited between two samples: the last one stands.
      }
    };
    const timer = setInterval(sample, 100);
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.once("error", reject);
    child.once("exit", (code) => {
      clearInterval(timer);
      const wallSeconds = (performance.now() - started) / 1000;
      if (code === null || !exitCodes.includes(code))
        reject(new Error(`${command} exited with ${code}: ${stderr.slice(-500)}`));
      else resolve({ stdout, generatorCores: cpuSeconds / wallSeconds, exitCode: code });
    });
  });
}

let wrkAvailable: boolean | undefined;

/** POSTs increments at `url` as fast as `connections` allow, with wrk when installed, else autocannon. */
export async function generateLoad(options: LoadOptions): Promise<LoadResult> {
  wrkAvailable ??= await run("wrk", ["--version"]).then(
    () => true,
    (error: { stdout?: string }) => (error.stdout ?? "").includes("wrk"),
  );
  const tool = options.tool ?? (wrkAvailable ? "wrk" : "autocannon");
  if (tool === "wrk" && !wrkAvailable) throw new Error("wrk is not installed (apt-get install wrk)");
  return tool === "wrk" ? runWrk(options) : runAutocannon(options);
}

async function runWrk(options: LoadOptions): Promise<LoadResult> {
  if (options.body === undefined) return wrk(options, "increment.lua", { KEYS: String(options.keys) });
  // wrk's Lua reads the body from a file: a batch of 1,000 is too long for an environment variable.
  const dir = await mkdtemp(path.join(tmpdir(), "tally-load-"));
  try {
    const bodyFile = path.join(dir, "body.json");
    await writeFile(bodyFile, options.body);
    return await wrk(options, "fixed-body.lua", { BODY_FILE: bodyFile });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function wrk(options: LoadOptions, script: string, env: Record<string, string>): Promise<LoadResult> {
  // One wrk thread: the machine's other core is the server's, and a second thread would take it.
  const { stdout, generatorCores } = await runSampled(
    "wrk",
    [
      "-t1",
      `-c${options.connections}`,
      `-d${options.durationS}s`,
      "--latency",
      "-s",
      fileURLToPath(new URL(`./${script}`, import.meta.url)),
      options.url,
    ],
    { ...process.env, TOKEN: options.token, ...env },
  );
  const number = (pattern: RegExp) => Number(pattern.exec(stdout)?.[1] ?? 0);
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(stdout);
  return {
    tool: "wrk",
    requestsPerSecond: number(/Requests\/sec:\s+([\d.]+)/),
    p50Ms: toMs(/^\s+50%\s+([\d.]+\w+)/m.exec(stdout)?.[1]),
    p99Ms: toMs(/^\s+99%\s+([\d.]+\w+)/m.exec(stdout)?.[1]),
    requests: number(/(\d+) requests in/),
    errors:
      number(/Non-2xx or 3xx responses: (\d+)/) +
      (socketErrors ? socketErrors.slice(1).reduce((sum, value) => sum + Number(value), 0) : 0),
    generatorCores,
  };
}

async function runAutocannon(options: LoadOptions): Promise<LoadResult> {
  const bin = fileURLToPath(new URL("../../node_modules/.bin/autocannon", import.meta.url));
  const { stdout, generatorCores } = await runSampled(
    bin,
    [
      "--json",
      "-c",
      String(options.connections),
      "-d",
      String(options.durationS),
      "-m",
      "POST",
      "-H",
      `authorization=Bearer ${options.token}`,
      "-H",
      "content-type=application/json",
      "-b",
      options.body ?? '{"key":"bench:1","value":1}',
      options.url,
    ],
    process.env,
  );
  const result = JSON.parse(stdout) as {
    requests: { average: number; total: number };
    latency: { p50: number; p99: number };
    non2xx: number;
    errors: number;
    timeouts: number;
  };
  return {
    tool: "autocannon",
    requestsPerSecond: result.requests.average,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    requests: result.requests.total,
    errors: result.non2xx + result.errors + result.timeouts,
    generatorCores,
  };
}

function toMs(text: string | undefined): number {
  const match = /^([\d.]+)(us|ms|s)$/.exec(text ?? "");
  if (!match) return Number.NaN;
  const value = Number(match[1]);
  return match[2] === "us" ? value / 1000 : match[2] === "s" ? value * 1000 : value;
}
