import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { mintToken } from "../../lib/tokens.ts";

// Run by local-start.test.ts inside fresh network and mount namespaces (unshare --net --mount), as a laptop
// with Node alone would be: nothing listens on Postgres' and Redis' default ports, and the system's Postgres
// is hidden. Starts `node <dist>/scripts/start.js` in a project directory with neither DATABASE_URL nor
// REDIS_URL set, counts, stops it, starts it again and reads the count back. Prints one JSON line.

const [startScript, projectDir] = process.argv.slice(2);
if (startScript === undefined || projectDir === undefined) throw new Error("usage: <start.js> <project dir>");
const SECRET = "local-start-secret-0123456789abcdef0123456789";

execFileSync("ip", ["link", "set", "lo", "up"]);
for (const hidden of ["/usr/lib/postgresql"])
  if (existsSync(hidden)) execFileSync("mount", ["-t", "tmpfs", "tmpfs", hidden]);

interface Run {
  child: ChildProcess;
  /** Its `tally: …` lines on stdout. */
  lines: string[];
  /** From spawn to the first ready answer. */
  readyAfterMs: number;
}

/** Starts npm start's script and waits until its API is ready. */
async function start(): Promise<Run> {
  const { DATABASE_URL: _database, REDIS_URL: _redis, ...env } = process.env;
  const began = performance.now();
  const child = spawn(process.execPath, [startScript as string], {
    cwd: projectDir,
    env: { ...env, JWT_SECRET: SECRET, API_WORKERS: "1", LOG_LEVEL: "warn", SYNC_INTERVAL_MS: "500" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines: string[] = [];
  child.stdout?.on("data", (chunk: Buffer) => {
    for (const line of chunk.toString().split("\n")) if (line.startsWith("tally: ")) lines.push(line);
  });
  for (;;) {
    const ready = await fetch("http://127.0.0.1:3333/readyz").then(
      (response) => response.ok,
      () => false,
    );
    if (ready) return { child, lines, readyAfterMs: Math.round(performance.now() - began) };
    if (child.exitCode !== null) throw new Error(`npm start exited with ${child.exitCode}`);
    await sleep(100);
  }
}

async function stop(run: Run): Promise<number | null> {
  run.child.kill("SIGTERM");
  await new Promise((resolve) => run.child.once("exit", resolve));
  return run.child.exitCode;
}

async function total(): Promise<string | null> {
  const client = new pg.Client({ connectionString: "postgres://postgres@127.0.0.1:5432/tally" });
  await client.connect();
  try {
    const { rows } = await client.query<{ value: string }>(
      "SELECT value::text FROM counters WHERE key = 'laptop'",
    );
    return rows[0]?.value ?? null;
  } finally {
    await client.end();
  }
}

const token = await mintToken({
  secret: SECRET,
  subject: "laptop",
  scopes: ["counters:write", "counters:read"],
});
const first = await start();
for (let i = 0; i < 5; i++) {
  const response = await fetch("http://127.0.0.1:3333/increment", {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ key: "laptop", value: 2 }),
  });
  if (response.status !== 202) throw new Error(`increment answered ${response.status}`);
}
let persisted: string | null = null;
for (let waited = 0; persisted !== "10" && waited < 100; waited++) {
  await sleep(100);
  persisted = await total().catch(() => null);
}
const firstExit = await stop(first);

const second = await start();
const afterRestart = await total();
const secondExit = await stop(second);

process.stdout.write(
  `${JSON.stringify({
    firstLines: first.lines,
    secondLines: second.lines,
    firstReadyAfterMs: first.readyAfterMs,
    secondReadyAfterMs: second.readyAfterMs,
    persisted,
    afterRestart,
    exits: [firstExit, secondExit],
  })}\n`,
);
