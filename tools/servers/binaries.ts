import { accessSync, constants } from "node:fs";
import path from "node:path";

export const INSTALL_HINT = "install them with: apt-get install redis-server postgresql";

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
