import type { Logger } from "../logger.ts";
import type { RedisClient } from "./client.ts";
import { isRedisReply } from "./errors.ts";
import { masterConnections } from "./info.ts";
import type { MasterConnection } from "./masters.ts";

/**
 * The largest hash Redis should keep as a listpack for tally. Redis keeps a hash of up to
 * `hash-max-listpack-entries` fields as one packed list, and HINCRBY searches that list field by field: a shard
 * whose dirty hash holds a few hundred hot keys then costs Redis several times per increment what the same
 * hash costs as a hash table, and batches are bound by Redis. Redis' own defaults (512 built in, 128 in its
 * sample redis.conf) keep such hashes listpacks. The dirty hashes are tally's only large hashes and each lives
 * for one sync cycle, so what a hash table takes more in memory does not accumulate.
 */
export const RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES = 32;

// The setting's name before Redis 7; Redis 7 and Valkey still answer to it, so one name reads every version.
const SETTING = "hash-max-ziplist-entries";

/**
 * Reads each master's `hash-max-listpack-entries` whenever the client (re)connects, and warns, once per
 * master, when it is above the recommendation. Performance advice only: counts are exact either way. A
 * master that refuses CONFIG (managed services often do) is left unchecked; one that cannot be reached is
 * checked at the next connection. Not on ioredis' "+node": reading a Cluster node that the client has only
 * just learned of kept the API from ever becoming ready (test/scale/redis-cluster.test.ts).
 */
export function watchHashEncoding(redis: RedisClient, logger: Logger): () => void {
  const warned = new Set<string>();
  const checkMaster = async ({ node, connection }: MasterConnection) => {
    if (warned.has(node)) return;
    const reply = await connection.config("GET", SETTING);
    const entries = Number(Array.isArray(reply) ? reply[1] : Number.NaN);
    if (!(entries > RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES)) return;
    warned.add(node);
    logger.warn(
      { node, hashMaxListpackEntries: entries, recommended: RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES },
      `this Redis keeps hashes of up to ${entries} fields as listpacks, which HINCRBY searches field by field: shards with a few hundred hot keys cost Redis several times the CPU per increment. Set hash-max-listpack-entries ${RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES} (docs/operations.md, "Redis requirements")`,
    );
  };
  // One check at a time, so that two events close together cannot warn twice.
  let checking = Promise.resolve();
  const check = () => {
    checking = checking.then(async () => {
      const results = await Promise.allSettled(masterConnections(redis).map(checkMaster));
      for (const result of results) {
        if (result.status === "rejected" && isRedisReply(result.reason))
          logger.debug({ reason: String(result.reason) }, "cannot read hash-max-listpack-entries");
      }
    });
  };
  redis.on("ready", check);
  if (redis.status === "ready") check();
  return () => {
    redis.off("ready", check);
  };
}
