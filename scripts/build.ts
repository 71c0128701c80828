import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cp, mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

// `npm run build` (and every `npm start*`, which builds first): compiles into dist/ when the sources changed
// since the last build, and only then. Several processes started at once on one host (N `start:api`, two
// `start:syncer`) take turns on a lock: the first builds, the others find the build current and go on,
// instead of all rewriting dist/ under each other. `--out-dir DIR` builds elsewhere (the tests do).

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const SOURCES = [
  "api",
  "syncer",
  "lib",
  "scripts",
  "tools/servers",
  "migrations",
  "tsconfig.json",
  "tsconfig.build.json",
  "package-lock.json",
];
const LOCK_WAIT_MS = 120_000;

function outDirFromArguments(): string {
  const at = process.argv.indexOf("--out-dir");
  const given = at >= 0 ? process.argv[at + 1] : undefined;
  return given === undefined ? path.join(ROOT, "dist") : path.resolve(given);
}

async function filesUnder(entry: string): Promise<string[]> {
  const info = await stat(entry);
  if (!info.isDirectory()) return [entry];
  const names = (await readdir(entry)).sort();
  return (await Promise.all(names.map((name) => filesUnder(path.join(entry, name))))).flat();
}

/** Changes when any source file is added, removed or modified. */
async function sourceStamp(): Promise<string> {
  const hash = createHash("sha256");
  for (const source of SOURCES) {
    for (const file of await filesUnder(path.join(ROOT, source))) {
      const { size, mtimeMs } = await stat(file);
      hash.update(`${path.relative(ROOT, file)}\0${size}\0${mtimeMs}\n`);
    }
  }
  return hash.digest("hex");
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** mkdir is atomic: whoever creates the lock directory builds. A lock left by a dead builder is taken over. */
async function withLock(lock: string, work: () => Promise<void>): Promise<void> {
  const giveUpAt = performance.now() + LOCK_WAIT_MS;
  // On a fresh checkout the directory that holds the output (and so the lock) may not exist yet.
  await mkdir(path.dirname(lock), { recursive: true });
  for (;;) {
    try {
      await mkdir(lock);
      await writeFile(path.join(lock, "pid"), String(process.pid));
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const holder = Number(await readFile(path.join(lock, "pid"), "utf8").catch(() => "0"));
      // A pid not written yet (0) is a builder that has just taken the lock.
      if (holder !== 0 && !isAlive(holder)) await rm(lock, { recursive: true, force: true });
      else if (performance.now() > giveUpAt)
        throw new Error(`${lock} is held by process ${holder}: is a build stuck?`);
      else await sleep(100);
    }
  }
  try {
    await work();
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}

async function build(outDir: string): Promise<void> {
  await rm(outDir, { recursive: true, force: true });
  const tsc = spawnSync(
    process.execPath,
    [
      path.join(ROOT, "node_modules/typescript/bin/tsc"),
      "-p",
      path.join(ROOT, "tsconfig.build.json"),
      "--outDir",
      outDir,
      "--tsBuildInfoFile",
      path.join(outDir, ".tsbuildinfo"),
    ],
    { stdio: "inherit" },
  );
  if (tsc.status !== 0) throw new Error(`tsc failed (exit ${tsc.status})`);
  await cp(path.join(ROOT, "lib/redis/scripts"), path.join(outDir, "lib/redis/scripts"), { recursive: true });
  await cp(path.join(ROOT, "migrations"), path.join(outDir, "migrations"), { recursive: true });
}

const outDir = outDirFromArguments();
const stampFile = path.join(outDir, ".build-stamp");
await withLock(`${outDir}.lock`, async () => {
  const stamp = await sourceStamp();
  if ((await readFile(stampFile, "utf8").catch(() => "")) === stamp) return;
  await build(outDir);
  await writeFile(stampFile, stamp);
  process.stderr.write(`tally: built ${path.relative(process.cwd(), outDir) || "."}\n`);
});
