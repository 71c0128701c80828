import type { Logger } from "../logger.ts";
import type { RedisClient } from "./client.ts";
import { isRedisReply } from "./errors.ts";
import { masterConnections } from "./info.ts";

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
 * Reads each master's `hash-max-listpack-entries` whenever the client (re)connects and warns, once per master,
 * when it is above the recommendation. Performance advice only: counts are exact either way. A Redis that
 * refuses CONFIG (managed services often do) is left unchecked. Returns the function that stops watching.
 */
export function watchHashEncoding(redis: RedisClient, logger: Logger): () => void {
  const warned = new Set<string>();
  const check = async () => {
    for (const { node, connection } of masterConnections(redis)) {
      if (warned.has(node)) continue;
      const reply = await connection.config("GET", SETTING);
      const entries = Number(Array.isArray(reply) ? reply[1] : Number.NaN);
      if (!(entries > RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES)) continue;
      warned.add(node);
      logger.warn(
        { node, hashMaxListpackEntries: entries, recommended: RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES },
        `this Redis keeps hashes of up to ${entries} fields as listpacks, which HINCRBY searches field by field: shards with a few hundred hot keys cost Redis several times the CPU per increment. Set hash-max-listpack-entries ${RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES} (docs/operations.md, "Redis requirements")`,
      );
    }
  };
  const onReady = () => {
    check().catch((error: unknown) => {
      // Not connected any more: the next "ready" checks again. Refused: nothing to check with.
      if (isRedisReply(error))
        logger.debug({ reason: String(error) }, "cannot read hash-max-listpack-entries");
    });
  };
  redis.on("ready", onReady);
  if (redis.status === "ready") onReady();
  return () => {
    redis.off("ready", onReady);
  };
}
