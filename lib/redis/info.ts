import { Cluster } from "ioredis";
import type { RedisClient } from "./client.ts";
import { type MasterConnection, nodeName } from "./masters.ts";

/** The fields of an INFO reply (`name:value` lines; section headers and blank lines skipped). */
export function parseInfo(info: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of info.split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0 && !line.startsWith("#")) fields.set(line.slice(0, colon), line.slice(colon + 1));
  }
  return fields;
}

/**
 * Every master the client writes to, each with its own connection: on a Redis Cluster every master has its
 * own settings and its own share of the keys; otherwise the one server (for Sentinel, the master it named).
 */
export function masterConnections(redis: RedisClient): MasterConnection[] {
  if (!(redis instanceof Cluster)) return [{ node: nodeName(redis), connection: redis }];
  return redis
    .nodes("master")
    .map((connection) => ({ node: `${connection.options.host}:${connection.options.port}`, connection }));
}
