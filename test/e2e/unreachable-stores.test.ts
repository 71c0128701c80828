import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it, onTestFinished } from "vitest";
import { freePort } from "../../tools/servers/ports.ts";
import { spawnTally } from "../../tools/tally-process.ts";
import { TEST_SECRET } from "../support/api.ts";

// Each command started with a store that is not there, as a new user or a compose stack would: a clear line
// that names the setting and the address, never a stack, and for the long-running roles a reminder at most
// every 30 s instead of a line per retry.

const EX_UNAVAILABLE = 69;

async function nowhere(scheme: "redis" | "postgres"): Promise<string> {
  const port = await freePort();
  return scheme === "redis" ? `redis://127.0.0.1:${port}` : `postgres://tally:s3cret@127.0.0.1:${port}/tally`;
}

const stackLines = (logs: Record<string, unknown>[]) =>
  logs.filter(
    (line) => /^\s+at /.test(String(line.msg)) || line.err !== undefined || line.stack !== undefined,
  );

function start(entry: string, env: Record<string, string>) {
  const process = spawnTally(entry, {
    JWT_SECRET: TEST_SECRET,
    HOST: "127.0.0.1",
    PORT: "0",
    METRICS_PORT: "0",
    ...env,
  });
  onTestFinished(async () => {
    await process.stop("SIGKILL");
  });
  return process;
}

describe("a store that is not there at start", () => {
  it("npm run migrate: one line naming DATABASE_URL (password masked) and the address, exit 69", async () => {
    const databaseUrl = await nowhere("postgres");
    const migrate = start("scripts/migrate.ts", { DATABASE_URL: databaseUrl, MIGRATE_WAIT_S: "0" });
    const { code } = await migrate.exited;
    expect(code).toBe(EX_UNAVAILABLE);
    const fatal = migrate.logs.filter((line) => line.level === "fatal");
    expect(fatal).toHaveLength(1);
    const { port } = new URL(databaseUrl);
    expect(fatal[0]?.msg).toContain(`DATABASE_URL=postgres://tally:***@127.0.0.1:${port}/tally`);
    expect(fatal[0]?.msg).toContain(`ECONNREFUSED 127.0.0.1:${port}`);
    expect(JSON.stringify(migrate.logs)).not.toContain("s3cret");
    expect(stackLines(migrate.logs)).toEqual([]);
  });

  it("npm run migrate waits MIGRATE_WAIT_S for Postgres, saying so once, then gives up", async () => {
    const migrate = start("scripts/migrate.ts", {
      DATABASE_URL: await nowhere("postgres"),
      MIGRATE_WAIT_S: "3",
    });
    const began = performance.now();
    const { code } = await migrate.exited;
    expect(code).toBe(EX_UNAVAILABLE);
    expect(performance.now() - began).toBeGreaterThan(2_500);
    expect(migrate.logs.map((line) => line.level)).toEqual(["warn", "fatal"]);
    expect(migrate.logs[0]?.msg).toMatch(/^cannot reach Postgres at DATABASE_URL=.*; waiting$/);
    expect(migrate.logs[1]?.msg).toMatch(/\(waited 3 s, \d+ attempts\)/);
  });

  it("npm start with both down: mentions Redis, then stops on Postgres with one line", async () => {
    const service = start("scripts/start.ts", {
      DATABASE_URL: await nowhere("postgres"),
      REDIS_URL: await nowhere("redis"),
      MIGRATE_WAIT_S: "0",
      API_WORKERS: "1",
    });
    const { code } = await service.exited;
    expect(code).toBe(EX_UNAVAILABLE);
    expect(service.logs.map((line) => [line.level, String(line.msg).split(":")[0]])).toEqual([
      ["warn", "cannot reach Redis at REDIS_URL=redis"],
      ["fatal", "cannot reach Postgres at DATABASE_URL=postgres"],
    ]);
    expect(stackLines(service.logs)).toEqual([]);
  });

  it("start:api with Redis unreachable serves 503s and says so once, with no stack per retry", async () => {
    const api = start("api/main.ts", { REDIS_URL: await nowhere("redis"), API_WORKERS: "1" });
    const listening = await api.waitForLog((line) => line.msg === "api listening");
    expect((await fetch(`${String(listening.url)}/healthz`)).status).toBe(200);
    expect((await fetch(`${String(listening.url)}/readyz`)).status).toBe(503);
    // ioredis retries every second at most: a few seconds are several attempts.
    await sleep(3_000);
    const redisLines = api.logs.filter((line) => String(line.msg).startsWith("cannot reach Redis"));
    expect(redisLines).toHaveLength(1);
    expect(redisLines[0]?.msg).toContain("REDIS_URL=redis://127.0.0.1:");
    expect(stackLines(api.logs)).toEqual([]);
    expect(api.child.exitCode).toBeNull();
  });

  it("start:syncer with both down names each store once, and waits", async () => {
    const syncer = start("syncer/main.ts", {
      REDIS_URL: await nowhere("redis"),
      DATABASE_URL: await nowhere("postgres"),
    });
    await syncer.waitForLog((line) => line.msg === "syncer started");
    await sleep(3_000);
    const about = (store: string) =>
      syncer.logs.filter((line) => String(line.msg).startsWith(`cannot reach ${store}`));
    expect(about("Redis")).toHaveLength(1);
    expect(about("Postgres")).toHaveLength(1);
    expect(about("Postgres")[0]?.msg).toContain("DATABASE_URL=postgres://tally:***@");
    expect(stackLines(syncer.logs)).toEqual([]);
    expect(syncer.child.exitCode).toBeNull();
  });
});
