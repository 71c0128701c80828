import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Cluster, Redis } from "ioredis";
import { isUnknownScript } from "./errors.ts";

// `--- @include "name"` on a line of its own stands for lib/redis/scripts/includes/name.lua.
const INCLUDE = /^--- @include "([\w-]+)"$/gm;
// `name-N.lua`: N is the number of KEYS the script takes.
const FILE_NAME = /^([a-z][\w-]*)-(\d+)\.lua$/;

function scriptFile(path: string): string {
  return readFileSync(new URL(`./scripts/${path}`, import.meta.url), "utf8");
}

/**
 * One Lua script of lib/redis/scripts/, named `<name>-<key count>.lua`, with its includes inlined. It runs
 * with EVALSHA, and with EVAL when the server does not know it yet (a new server, a restart, SCRIPT
 * FLUSH): both within the one call, so a caller that waits for the call's answer waits for the write.
 */
export class LuaScript {
  readonly name: string;
  readonly keyCount: number;
  readonly source: string;
  readonly sha: string;

  constructor(file: string) {
    const match = FILE_NAME.exec(file);
    if (match === null) throw new Error(`${file}: a script's file is named <name>-<key count>.lua`);
    this.name = match[1] as string;
    this.keyCount = Number(match[2]);
    this.source = scriptFile(file).replace(INCLUDE, (_, include: string) =>
      scriptFile(`includes/${include}.lua`),
    );
    this.sha = createHash("sha1").update(this.source).digest("hex");
  }

  async run(
    connection: Redis | Cluster,
    keys: readonly string[],
    args: readonly (string | number)[],
  ): Promise<unknown> {
    if (keys.length !== this.keyCount) {
      throw new RangeError(`${this.name} takes ${this.keyCount} keys, not ${keys.length}`);
    }
    try {
      return await connection.evalsha(this.sha, this.keyCount, ...keys, ...args);
    } catch (error) {
      if (!isUnknownScript(error)) throw error;
      return connection.eval(this.source, this.keyCount, ...keys, ...args);
    }
  }
}
