import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { access, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it, onTestFinished } from "vitest";
import { freePort } from "../../tools/servers/ports.ts";
import { spawnTally, type TallyProcess } from "../../tools/tally-process.ts";
import { freshDatabase, randomPrefix, sharedRedisUrl, waitFor } from "../harness/fixtures.ts";
import { TEST_SECRET } from "../support/api.ts";

// Several tally processes on one host, as docs/operations.md runs them: built at the same
// moment, started at the same moment, and a port clash told in a line the operator can act on.

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const run = promisify(execFile);
// Inside the repository (and ignored by git), so the built files resolve node_modules as dist/ does; in a
// directory that does not exist yet, as .tmp/ does not on a fresh checkout.
const buildRoot = path.join(ROOT, ".tmp", `build-${randomBytes(4).toString("hex")}`);
const outDir = path.join(buildRoot, "dist");
afterAll(() => rm(buildRoot, { recursive: true, force: true }));

function started(entry: string, env: Record<string, string>): TallyProcess {
  const process = spawnTally(entry, env);
  onTestFinished(async () => {
    await process.stop("SIGKILL");
  });
  return process;
}

describe("several processes on one host", () => {
  it("three builds at once: one compiles, the others wait for it and find it current", {
    timeout: 120_000,
  }, async () => {
    const builds = await Promise.all(
      [1, 2, 3].map(() =>
        run(process.execPath, ["--import", "tsx", "scripts/build.ts", "--out-dir", outDir], { cwd: ROOT }),
      ),
    );
    expect(builds.map(({ stderr }) => stderr.includes("tally: built")).filter(Boolean)).toHaveLength(1);
    for (const file of [
      "api/main.js",
      "syncer/main.js",
      "scripts/start.js",
      "lib/redis/scripts/swap-6.lua",
      "lib/redis/scripts/includes/apply-increments.lua",
      "migrations/000001_counters.sql",
    ]) {
      await access(path.join(outDir, file));
    }
    expect(await readFile(path.join(outDir, ".build-stamp"), "utf8")).toMatch(/^[0-9a-f]{64}$/);
    await expect(access(`${outDir}.lock`)).rejects.toThrow();
  });

  it("two API nodes and two syncers started at once, METRICS_PORT=0: all come up", {
    timeout: 60_000,
  }, async () => {
    const database = await freshDatabase();
    onTestFinished(() => database.drop());
    const env = {
      REDIS_URL: sharedRedisUrl(),
      REDIS_KEY_PREFIX: randomPrefix(),
      DATABASE_URL: database.url,
      JWT_SECRET: TEST_SECRET,
      HOST: "127.0.0.1",
      METRICS_PORT: "0",
      API_WORKERS: "2",
    };
    const apis = [await freePort(), await freePort()].map((port) =>
      started(path.join(outDir, "api/main.js"), { ...env, PORT: String(port) }),
    );
    const syncers = [1, 2].map(() => started(path.join(outDir, "syncer/main.js"), env));
    for (const api of apis) {
      const { url } = await api.waitForLog((line) => line.msg === "api listening");
      await waitFor(async () => (await fetch(`${String(url)}/readyz`)).ok, {
        message: "an API node never became ready",
      });
    }
    for (const syncer of syncers) await syncer.waitForLog((line) => line.msg === "metrics listening");
    await waitFor(
      async () => syncers.some((syncer) => syncer.logs.some((line) => line.msg === "took shards")),
      {
        message: "no syncer led",
      },
    );
    for (const process of [...apis, ...syncers]) expect(process.child.exitCode).toBeNull();
  });

  it("a second process on a METRICS_PORT in use stops with one line naming it, its workers without a stack", async () => {
    const metricsPort = String(await freePort());
    const env = {
      REDIS_URL: sharedRedisUrl(),
      REDIS_KEY_PREFIX: randomPrefix(),
      JWT_SECRET: TEST_SECRET,
      HOST: "127.0.0.1",
      PORT: "0",
      METRICS_PORT: metricsPort,
      API_WORKERS: "2",
    };
    const first = started("api/main.ts", env);
    await first.waitForLog((line) => line.msg === "metrics listening");
    const second = started("api/main.ts", env);
    const { code } = await second.exited;
    expect(code).toBe(78);
    const fatal = second.logs.filter((line) => line.level === "fatal");
    expect(fatal.map((line) => line.msg)).toEqual([
      `METRICS_PORT=${metricsPort} is already in use on 127.0.0.1 (another tally process on this host?): give each process its own METRICS_PORT, or METRICS_PORT=0 for any free port`,
    ]);
    expect(
      second.logs.filter((line) => /^\s+at |EPIPE/.test(String(line.msg)) || line.err !== undefined),
    ).toEqual([]);
    expect(first.child.exitCode).toBeNull();
  });
});
