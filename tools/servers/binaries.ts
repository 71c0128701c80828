import { accessSync, constants } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const INSTALL_HINT =
  "install redis-server (apt-get install redis-server); Postgres comes with npm install";

export function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export function findOnPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  return null;
}

export function missingBinaries(what: string): Error {
  return new Error(`the test harness needs ${what} but could not find it on PATH; ${INSTALL_HINT}`);
}

export function findRedisServer(): string {
  const found = findOnPath("redis-server");
  if (!found) throw missingBinaries("redis-server");
  return found;
}

/**
 * The k6 binary: K6_BIN when set (.ci/run sets it to the k6 beside the repository), else `k6` on PATH, else
 * `../shared/bin/k6` beside the repository, where this machine keeps one; undefined when there is none.
 */
export function findK6(): string | undefined {
  const candidates = [
    process.env.K6_BIN,
    findOnPath("k6"),
    fileURLToPath(new URL("../../../shared/bin/k6", import.meta.url)),
  ];
  return candidates.find(
    (candidate): candidate is string => typeof candidate === "string" && isExecutable(candidate),
  );
}
