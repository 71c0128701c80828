import type { RedisClient } from "./client.ts";
import { masterConnections, parseInfo } from "./info.ts";

/**
 * What Redis may throw away when it reaches `maxmemory`:
 * - "none": nothing (noeviction). A full Redis refuses writes; tally answers 503 and loses nothing.
 * - "volatile": keys with a TTL (volatile-*): Idempotency-Key records, rate-limit windows and the syncer's
 *   lease. Counts are safe (the hashes have no TTL), but a retry whose record was evicted counts twice.
 * - "any": any key (allkeys-*, or a policy this code does not know), the hashes of accepted increments
 *   included: acknowledged counts vanish without a trace.
 */
export type EvictionRisk = "none" | "volatile" | "any";

export function evictionRisk(policy: string): EvictionRisk {
  if (policy === "noeviction") return "none";
  if (policy.startsWith("volatile-")) return "volatile";
  return "any";
}

/** One Redis master's memory settings and use, from INFO memory. */
export interface RedisMemory {
  /** host:port of the master. */
  node: string;
  policy: string;
  /** Memory Redis weighs against maxmemory (used_memory less what it does not count for eviction). */
  usedBytes: number;
  /** maxmemory; 0 means no limit. */
  maxBytes: number;
}

/**
 * Parses INFO memory. INFO, not CONFIG GET: managed services often disable CONFIG, and INFO carries the
 * policy and the limit too.
 */
export function parseInfoMemory(node: string, info: string): RedisMemory {
  const fields = parseInfo(info);
  const number = (name: string) => {
    const value = Number(fields.get(name));
    return Number.isFinite(value) ? value : undefined;
  };
  const policy = fields.get("maxmemory_policy");
  const used = number("used_memory");
  const max = number("maxmemory");
  if (policy === undefined || used === undefined || max === undefined) {
    throw new Error(`INFO memory from ${node} lacks maxmemory_policy, used_memory or maxmemory`);
  }
  return { node, policy, usedBytes: used - (number("mem_not_counted_for_evict") ?? 0), maxBytes: max };
}

/**
 * Share of maxmemory a Redis that was full must fall under before it counts as having room again. A full
 * Redis hovers at its limit, refusing one write and taking the next as the syncer frees and clients fill;
 * without this margin readiness would flap with every reading.
 */
export const ROOM_AGAIN_BELOW = 0.95;

/** True when a Redis that was full has clearly drained: no limit, or use under ROOM_AGAIN_BELOW of it. */
export function hasRoomAgain(memory: RedisMemory): boolean {
  return memory.maxBytes === 0 || memory.usedBytes < memory.maxBytes * ROOM_AGAIN_BELOW;
}

/** True when Redis refuses writes that need memory: at or over a set maxmemory. */
export function isFull(memory: RedisMemory): boolean {
  return memory.maxBytes > 0 && memory.usedBytes >= memory.maxBytes;
}

/** Reads every master: on a Redis Cluster each one has its own settings and its own share of the keys. */
export async function readRedisMemory(redis: RedisClient): Promise<RedisMemory[]> {
  return Promise.all(
    masterConnections(redis).map(async ({ node, connection }) =>
      parseInfoMemory(node, await connection.info("memory")),
    ),
  );
}
