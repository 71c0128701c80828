import { randomBytes } from "node:crypto";
import { copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from "vitest";
import { MIGRATIONS_DIR, migrate, readMigrations } from "../../lib/postgres/migrate.ts";
import { createPool } from "../../lib/postgres/pool.ts";

// migrate() must be safe to run from several processes at once against a database that has nothing yet,
// which is exactly how a fleet starting together meets a brand-new database.

const TABLES = ["counters", "sync_batches", "sync_state", "quarantined_deltas", "tally_migrations"];

let admin: pg.Client;
const databases: string[] = [];

beforeAll(async () => {
  admin = new pg.Client({ connectionString: inject("postgresUrl") });
  await admin.connect();
});

afterAll(async () => {
  for (const name of databases) {
    await admin.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
      [name],
    );
    await admin.query(`DROP DATABASE IF EXISTS ${name}`);
  }
  await admin.end();
});

/** A brand-new, empty database (not the migrated test template); dropped after the file. */
async function emptyDatabase(): Promise<string> {
  const name = `tally_migrate_${randomBytes(6).toString("hex")}`;
  await admin.query(`CREATE DATABASE ${name}`);
  databases.push(name);
  const url = new URL(inject("postgresUrl"));
  url.pathname = `/${name}`;
  return url.toString();
}

function poolFor(url: string): pg.Pool {
  const pool = createPool({ connectionString: url, applicationName: "test-migrate", max: 2 });
  onTestFinished(() => pool.end());
  return pool;
}

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "tally-migrations-"));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function appliedMigrations(pool: pg.Pool): Promise<{ id: number; name: string }[]> {
  const { rows } = await pool.query<{ id: number; name: string }>(
    "SELECT id, name FROM tally_migrations ORDER BY id",
  );
  return rows;
}

describe("migrate", () => {
  it("applies every migration exactly once when two runners start at once on an empty database", async () => {
    const url = await emptyDatabase();
    const [one, two] = [poolFor(url), poolFor(url)];
    const all = (await readMigrations()).map((migration) => migration.name);

    const [appliedByOne, appliedByTwo] = await Promise.all([migrate(one), migrate(two)]);

    // One runner did the work; the other waited on the lock and found nothing left.
    expect([...appliedByOne, ...appliedByTwo].sort()).toEqual(all);
    expect([appliedByOne, appliedByTwo]).toContainEqual([]);
    const { rows } = await one.query<{ name: string }>(
      "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public'",
    );
    expect(rows.map((row) => row.name).sort()).toEqual([...TABLES].sort());
    expect(await appliedMigrations(one)).toEqual(all.map((name, index) => ({ id: index + 1, name })));

    expect(await migrate(two)).toEqual([]);
    expect(await appliedMigrations(one)).toHaveLength(all.length);
  });

  it("rolls a failing migration back, keeps the ones before it, and applies it once fixed", async () => {
    const url = await emptyDatabase();
    const pool = poolFor(url);
    const dir = await tempDir();
    await copyFile(path.join(MIGRATIONS_DIR, "000001_counters.sql"), path.join(dir, "000001_counters.sql"));
    const second = path.join(dir, "000002_add_notes.sql");
    await writeFile(second, "CREATE TABLE notes (id integer); SELECT 1 / 0;");

    await expect(migrate(pool, dir)).rejects.toThrow(/000002_add_notes\.sql failed: division by zero/);

    expect((await appliedMigrations(pool)).map((row) => row.id)).toEqual([1]);
    const { rows } = await pool.query<{ exists: string | null }>("SELECT to_regclass('notes') AS exists");
    expect(rows[0]?.exists).toBeNull();

    await writeFile(second, "CREATE TABLE notes (id integer);");
    expect(await migrate(pool, dir)).toEqual(["000002_add_notes.sql"]);
    expect((await appliedMigrations(pool)).map((row) => row.id)).toEqual([1, 2]);
  });
});

describe("readMigrations", () => {
  it("reads the numbered .sql files in order and ignores other files", async () => {
    const dir = await tempDir();
    await writeFile(path.join(dir, "000002_second.sql"), "SELECT 2;");
    await writeFile(path.join(dir, "000001_first.sql"), "SELECT 1;");
    await writeFile(path.join(dir, "README.md"), "not a migration");

    expect(await readMigrations(dir)).toEqual([
      { id: 1, name: "000001_first.sql", sql: "SELECT 1;" },
      { id: 2, name: "000002_second.sql", sql: "SELECT 2;" },
    ]);
  });

  it.each(["1_short_number.sql", "000001-dash.sql", "000001_Upper.sql", "000001_.sql"])(
    "rejects the misnamed file %s",
    async (name) => {
      const dir = await tempDir();
      await writeFile(path.join(dir, name), "SELECT 1;");

      await expect(readMigrations(dir)).rejects.toThrow(/must be named like 000001_some_change\.sql/);
    },
  );

  it.each([
    { files: ["000001_a.sql", "000003_c.sql"], expected: 2 },
    { files: ["000002_b.sql"], expected: 1 },
    { files: ["000001_a.sql", "000001_again.sql"], expected: 2 },
  ])("rejects files out of sequence: $files", async ({ files, expected }) => {
    const dir = await tempDir();
    for (const name of files) await writeFile(path.join(dir, name), "SELECT 1;");

    await expect(readMigrations(dir)).rejects.toThrow(`out of sequence: expected number ${expected}`);
  });

  it("reads the project's own migrations", async () => {
    const migrations = await readMigrations();

    expect(migrations.map((migration) => migration.id)).toEqual(migrations.map((_, index) => index + 1));
    expect(migrations[0]?.sql).toContain("CREATE TABLE counters");
  });
});
