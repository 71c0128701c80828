import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { jwtVerify } from "jose";
import { describe, expect, it } from "vitest";
import { TEST_SECRET } from "../support/api.ts";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** Runs an entry point the way its npm script does, returning exit code and output instead of throwing. */
async function runEntry(entry: string, args: string[], env: Record<string, string>) {
  try {
    const { stdout, stderr } = await run(process.execPath, ["--import", "tsx", entry, ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "", ...env },
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

describe("npm run token", () => {
  it("prints a token signed with JWT_SECRET carrying the subject, the scopes and an expiry", async () => {
    const { code, stdout } = await runEntry(
      "scripts/token.ts",
      ["--sub", "svc-1", "--scope", "counters:read"],
      {
        JWT_SECRET: TEST_SECRET,
      },
    );
    expect(code).toBe(0);
    const { payload } = await jwtVerify(stdout.trim(), new TextEncoder().encode(TEST_SECRET), {
      algorithms: ["HS256"],
    });
    expect(payload).toMatchObject({ sub: "svc-1", scope: "counters:read" });
    expect(payload.exp).toBeGreaterThan(Date.now() / 1000);
  });

  it("without JWT_SECRET, says on stderr that the development secret signed it, and prints the token alone", async () => {
    const { code, stdout, stderr } = await runEntry("scripts/token.ts", ["--sub", "dev"], {});
    expect(code).toBe(0);
    expect(stdout.trim()).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    expect(stderr).toContain("signed with the built-in development secret");
  });

  it("confines a token to the prefixes given with --prefix, which may repeat", async () => {
    const { code, stdout } = await runEntry(
      "scripts/token.ts",
      ["--sub", "team-a", "--prefix", "team-a:", "--prefix", "shared:%_*"],
      { JWT_SECRET: TEST_SECRET },
    );
    expect(code).toBe(0);
    const { payload } = await jwtVerify(stdout.trim(), new TextEncoder().encode(TEST_SECRET));
    expect(payload.tally_prefixes).toEqual(["team-a:", "shared:%_*"]);
  });

  it("refuses an empty --prefix: every key would start with it", async () => {
    const { code, stderr } = await runEntry("scripts/token.ts", ["--sub", "x", "--prefix", ""], {
      JWT_SECRET: TEST_SECRET,
    });
    expect(code).toBe(64);
    expect(stderr).toContain("--prefix: the prefixes must be");
    expect(stderr).not.toMatch(/^\s+at /m);
  });

  it.each([["--help"], ["-h"]])("prints its usage for %s and exits 0", async (flag) => {
    const { code, stdout, stderr } = await runEntry("scripts/token.ts", [flag], {});
    expect(code).toBe(0);
    expect(stdout).toContain("usage: npm run token -- --sub <client>");
    expect(stderr).toBe("");
  });

  it("names an unknown option, with the usage and no stack", async () => {
    const { code, stderr } = await runEntry("scripts/token.ts", ["--subject", "x"], {
      JWT_SECRET: TEST_SECRET,
    });
    expect(code).toBe(64);
    expect(stderr).toContain("--subject");
    expect(stderr).toContain("usage: npm run token");
    expect(stderr).not.toMatch(/^\s+at /m);
  });

  it("explains its usage when --sub is missing", async () => {
    const { code, stderr } = await runEntry("scripts/token.ts", [], { JWT_SECRET: TEST_SECRET });
    expect(code).toBe(64);
    expect(stderr).toContain("usage: npm run token -- --sub <client>");
  });
});

describe("configuration errors stop the process before it starts", () => {
  it.each([
    ["api/main.ts", { PORT: "abc" }, "PORT: must be a whole number"],
    ["syncer/main.ts", { SYNC_INTERVAL_MS: "0" }, "SYNC_INTERVAL_MS: must be at least 50"],
    ["api/main.ts", { NODE_ENV: "production" }, "no token verification configured"],
  ])("%s with %o", async (entry, env, message) => {
    const { code, stderr } = await runEntry(entry, [], env);
    expect(code).toBe(78);
    expect(stderr).toContain(message);
  });
});
