import type { ShardKeys } from "../../lib/redis/keyspace.ts";
import type { Increment } from "../../lib/redis/script-replies.ts";
import type { Scripts } from "../../lib/redis/scripts.ts";
import { batchPerTurn } from "../../lib/turn-batch.ts";
import { failedPart, type PartResult, partResultOf } from "./part-result.ts";

// A turn's increments go to Redis in scripts of at most this many, so that one burst cannot make a script
// that holds Redis up for long (a group is never split, so one may carry a whole batch's part).
const MAX_INCREMENTS_PER_SCRIPT = 1_000;

/** One request's increments in one shard, waiting for the end of the event-loop turn. */
interface Group {
  shard: ShardKeys;
  increments: readonly Increment[];
  settle(result: PartResult): void;
}

/**
 * Applies parts of requests without an Idempotency-Key. The parts that arrive in one event-loop turn go to
 * Redis together, one increment-batch script per shard they touch (cut at MAX_INCREMENTS_PER_SCRIPT): one
 * command instead of one per request, which was the API's largest cost per increment. Each part is a group
 * of the script, applied whole or not at all, and answered once Redis has it (and the replicas, where the
 * acknowledgements wait for them).
 */
export function batchPartsPerTurn(
  scripts: Scripts,
): (shard: ShardKeys, increments: readonly Increment[]) => Promise<PartResult> {
  const send = async (shard: ShardKeys, groups: Group[]) => {
    try {
      const { value, confirmed } = await scripts.incrementGroups(
        shard,
        groups.map((group) => group.increments),
      );
      // One result per group, in order (groupResults checks the count).
      for (const [index, result] of value.entries()) groups[index]?.settle(partResultOf(result, confirmed));
    } catch (error) {
      for (const group of groups) group.settle(failedPart(error));
    }
  };
  const collect = batchPerTurn<Group>((groups) => {
    const calls = new Map<ShardKeys, { groups: Group[]; size: number }[]>();
    for (const group of groups) {
      const shardCalls = calls.get(group.shard) ?? [];
      calls.set(group.shard, shardCalls);
      let call = shardCalls.at(-1);
      if (
        call === undefined ||
        (call.size > 0 && call.size + group.increments.length > MAX_INCREMENTS_PER_SCRIPT)
      ) {
        call = { groups: [], size: 0 };
        shardCalls.push(call);
      }
      call.groups.push(group);
      call.size += group.increments.length;
    }
    for (const [shard, shardCalls] of calls) for (const call of shardCalls) void send(shard, call.groups);
  });
  return (shard, increments) => new Promise((settle) => collect({ shard, increments, settle }));
}
