import { createHash } from "node:crypto";
import type { Keyspace, ShardKeys } from "../../lib/redis/keyspace.ts";
import type { Increment } from "../../lib/redis/script-replies.ts";
import type { Scripts } from "../../lib/redis/scripts.ts";
import { failedPart, type PartResult, partResultOf } from "./part-result.ts";
import { batchPartsPerTurn } from "./turn-batcher.ts";
import { type WriteOutcome, writeOutcome } from "./write-outcome.ts";

export interface IdempotencyKey {
  /** Who sent it: keys are per client, so two clients may use the same key independently. */
  clientId: string;
  key: string;
}

export interface IncrementRequest {
  increments: readonly Increment[];
  idempotency?: IdempotencyKey;
  /**
   * The endpoint it came to. A retry must repeat the request to be the same one, and each endpoint has
   * always recorded its requests in its own form.
   */
  endpoint: "increment" | "increments";
}

/** Adds a request's increments to the dirty hashes of their shards; says what became of them. */
export type IncrementStore = (request: IncrementRequest) => Promise<WriteOutcome>;

export interface IncrementStoreOptions {
  /** How long an Idempotency-Key is remembered. */
  idempotencyTtlSeconds: number;
  /** Most Idempotency-Key records held at once, over every shard. */
  idempotencyMaxRecords: number;
}

/** What the idempotency scripts take of the options: the records' lifetime, and each shard's share of the bound. */
export function recordLimits(
  options: IncrementStoreOptions,
  keyspace: Keyspace,
): { ttlSeconds: number; maxRecordsInShard: number } {
  return {
    ttlSeconds: options.idempotencyTtlSeconds,
    maxRecordsInShard: Math.ceil(options.idempotencyMaxRecords / keyspace.shards.length),
  };
}

/** One shard's part of a request: its increments, and where each stands in the request. */
interface ShardPart {
  shard: ShardKeys;
  increments: Increment[];
  indexes: number[];
}

/**
 * Each increment goes to its key's own shard (Keyspace.shardOf), so a key is one Postgres row per cycle
 * however many shards there are, and a request is cut into one part per shard it touches. A part is applied
 * whole or not at all.
 *
 * Without an Idempotency-Key, parts go to Redis with every other request's of the event-loop turn (see
 * turn-batcher.ts). With a key, each part has its own record beside it in its shard: shards stay
 * key-disjoint, so syncers can apply them in parallel, and a retry of the same request touches the same
 * shards and finds its records; one script checks a part's record and applies the part.
 */
export function createIncrementStore(
  scripts: Scripts,
  keyspace: Keyspace,
  options: IncrementStoreOptions,
): IncrementStore {
  const limits = recordLimits(options, keyspace);
  const applyInTurn = batchPartsPerTurn(scripts);

  const applyOnce = async (part: ShardPart, idempotency: IdempotencyKey, fingerprint: string) => {
    const record = keyspace.idempotencyRecord(part.shard, idempotency.clientId, idempotency.key);
    try {
      const { value, confirmed } = await scripts.incrementOnce(record, part.increments, fingerprint, limits);
      return partResultOf(value, confirmed);
    } catch (error) {
      return failedPart(error);
    }
  };

  const applyWithRecord =
    (idempotency: IdempotencyKey, fingerprint: string) =>
    (part: ShardPart): Promise<PartResult> =>
      applyOnce(part, idempotency, fingerprint);
  const applyInTurnOf = (part: ShardPart) => applyInTurn(part.shard, part.increments);

  return async function increment({ increments, idempotency, endpoint }) {
    const apply =
      idempotency === undefined
        ? applyInTurnOf
        : applyWithRecord(idempotency, fingerprintOf(increments, endpoint));
    const parts = partsOf(increments, keyspace);
    const [only] = parts;
    // Most requests touch one shard: no Promise.all and no closure per part for them.
    const results =
      parts.length === 1 && only !== undefined
        ? [{ result: await apply(only), indexes: only.indexes }]
        : await Promise.all(
            parts.map(async (part) => ({ result: await apply(part), indexes: part.indexes })),
          );
    return writeOutcome(results, increments.length, idempotency !== undefined);
  };
}

function partsOf(increments: readonly Increment[], keyspace: Keyspace): ShardPart[] {
  const [first] = increments;
  if (increments.length === 1 && first !== undefined) {
    return [{ shard: keyspace.shardOf(first.key), increments: [first], indexes: [0] }];
  }
  const parts = new Map<ShardKeys, ShardPart>();
  increments.forEach((increment, index) => {
    const shard = keyspace.shardOf(increment.key);
    let part = parts.get(shard);
    if (part === undefined) {
      part = { shard, increments: [], indexes: [] };
      parts.set(shard, part);
    }
    part.increments.push(increment);
    part.indexes.push(index);
  });
  return [...parts.values()];
}

/** What a retry must repeat to be the same request, in the form each endpoint has always recorded. */
function fingerprintOf(increments: readonly Increment[], endpoint: IncrementRequest["endpoint"]): string {
  const [only] = increments;
  const shape =
    endpoint === "increment" && only !== undefined
      ? [only.key, only.value]
      : increments.map(({ key, value }) => [key, value]);
  return createHash("sha256").update(JSON.stringify(shape)).digest("base64url");
}
