import { randomBytes } from "node:crypto";
import pg from "pg";
import { inject } from "vitest";

const TEMPLATE_DATABASE = "tally_template";
const OBJECT_IN_USE = "55006";

export function sharedRedisUrl(): string {
  return inject("redisUrl");
}

/** A fresh Redis key namespace, so tests sharing the one Redis never see each other's keys. */
export function randomPrefix(): string {
  return `t${randomBytes(4).toString("hex")}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function withAdminClient<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: inject("postgresUrl") });
  client.on("error", () => {});
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end().catch(() => {});
  }
}

// "being accessed by other users": a backend that just disconnected can take a moment to exit.
async function retryWhileInUse(statement: () => Promise<unknown>): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await statement();
      return;
    } catch (error) {
      if ((error as { code?: string }).code !== OBJECT_IN_USE || Date.now() >= deadline) throw error;
      await sleep(100);
    }
  }
}

/**
 * A new database on the shared Postgres, cloned from the migrated template. With `icuLocale`: an empty one whose
 * default collation is that ICU locale's, as a user's database may be, for the caller to migrate.
 */
export async function freshDatabase(
  options: { icuLocale?: string } = {},
): Promise<{ url: string; name: string; drop(): Promise<void> }> {
  const name = `tally_${randomBytes(6).toString("hex")}`;
  await withAdminClient(async (client) => {
    if (options.icuLocale !== undefined) {
      await client.query(
        `CREATE DATABASE ${name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '${options.icuLocale}' LOCALE 'C'`,
      );
      return;
    }
    const { rows } = await client.query<{ version: string }>("SHOW server_version_num");
    // Postgres 15's default WAL_LOG strategy copies the template through the WAL: ~15x slower than
    // FILE_COPY for a small template, and with fsync=off FILE_COPY's checkpoints cost next to nothing.
    const strategy = Number(rows[0]?.version) >= 150_000 ? " STRATEGY FILE_COPY" : "";
    await retryWhileInUse(() =>
      client.query(`CREATE DATABASE ${name} TEMPLATE ${TEMPLATE_DATABASE}${strategy}`),
    );
  });
  const url = new URL(inject("postgresUrl"));
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    drop: () =>
      withAdminClient(async (client) => {
        await retryWhileInUse(async () => {
          await client.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            [name],
          );
          await client.query(`DROP DATABASE IF EXISTS ${name}`);
        });
      }),
  };
}

export async function waitFor<T>(
  probe: () => Promise<T | undefined | null | false>,
  /** `message` may be a function, to say what the last probe saw. */
  options: { timeoutMs?: number; intervalMs?: number; message?: string | (() => string) } = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const intervalMs = options.intervalMs ?? 50;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    // A probe that throws counts as "not yet": probes typically talk to a server that is restarting.
    try {
      const result = await probe();
      if (result) return result;
      lastError = undefined;
    } catch (error) {
      lastError = error;
    }
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      const detail = lastError instanceof Error ? ` (last error: ${lastError.message})` : "";
      const message = typeof options.message === "function" ? options.message() : options.message;
      throw new Error(`${message ?? "waitFor timed out"} after ${timeoutMs} ms${detail}`, {
        cause: lastError,
      });
    }
    await sleep(Math.min(intervalMs, remaining));
  }
}
