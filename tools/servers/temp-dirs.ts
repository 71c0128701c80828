import { rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { atExit } from "./at-exit.ts";

const liveDirs = new Set<string>();
const removeLiveDirs = () => {
  for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
};

/** A new directory for one server's data and logs, removed when this process exits if not before. */
export async function makeTempDir(kind: string): Promise<string> {
  atExit(removeLiveDirs);
  const dir = await mkdtemp(path.join(os.tmpdir(), `tally-test-${kind}-`));
  liveDirs.add(dir);
  return dir;
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  liveDirs.delete(dir);
}
