import { parseInfo } from "./info.ts";

/** What one Redis master says of its replication, and what a failover could put in its place. */
export interface ReplicaReading {
  /** host:port of the master. */
  node: string;
  /** Replicas connected to it now (INFO replication's connected_slaves). */
  connected: number;
  /**
   * Replicas a failover could promote in its place: on a Redis Cluster those the cluster bus does not
   * hold for failed, under Sentinel those the Sentinels do not hold for down, else those connected now.
   * A replica whose replication link is down but that is otherwise alive counts: it may be promoted behind.
   */
  promotable: number;
  /**
   * min-replicas-to-write is set: cut off from its replicas, the master refuses writes (NOREPLICAS) instead
   * of taking writes that a failover would discard.
   */
  fenced: boolean;
  /** redis_version, e.g. "7.0.15" (Valkey reports the Redis version it is compatible with). */
  version: string;
  /** appendonly is on: WAITAOF can ask the master itself to fsync. */
  aof: boolean;
}

/** Parses `INFO replication persistence server` of a master; `promotable` is filled in from the topology. */
export function parseReplicationInfo(node: string, info: string): Omit<ReplicaReading, "promotable"> {
  const fields = parseInfo(info);
  const connected = Number(fields.get("connected_slaves"));
  const version = fields.get("redis_version");
  if (!Number.isInteger(connected) || version === undefined) {
    throw new Error(`INFO from ${node} lacks connected_slaves or redis_version`);
  }
  return {
    node,
    connected,
    // Redis shows this line only while both min-replicas-to-write and min-replicas-max-lag are set.
    fenced: fields.has("min_slaves_good_slaves"),
    version,
    aof: fields.get("aof_enabled") === "1",
  };
}

/**
 * Replicas of `masterId` in a CLUSTER NODES reply that a failover could promote: every one the bus does
 * not mark as failed (a replica only suspected, `fail?`, may still win an election).
 */
export function promotableInClusterNodes(clusterNodes: string, masterId: string): number {
  let count = 0;
  for (const line of clusterNodes.split("\n")) {
    const [, , flags, master] = line.trim().split(" ");
    if (master !== masterId || flags === undefined) continue;
    const flagList = flags.split(",");
    if (flagList.includes("slave") && !flagList.includes("fail")) count++;
  }
  return count;
}

/** The id of the node that answered a CLUSTER NODES reply (its line carries `myself`). */
export function myIdInClusterNodes(clusterNodes: string): string | undefined {
  for (const line of clusterNodes.split("\n")) {
    const [id, , flags] = line.trim().split(" ");
    if (flags?.split(",").includes("myself")) return id;
  }
  return undefined;
}

/**
 * Replicas in a SENTINEL REPLICAS reply that the Sentinels could promote: those they do not hold for
 * subjectively or objectively down, nor have lost their link to.
 */
export function promotableInSentinelReplicas(reply: unknown): number {
  if (!Array.isArray(reply)) return 0;
  let count = 0;
  for (const entry of reply) {
    if (!Array.isArray(entry)) continue;
    const at = entry.indexOf("flags");
    const flags = String(entry[at + 1] ?? "").split(",");
    if (at >= 0 && !flags.some((flag) => ["s_down", "o_down", "disconnected"].includes(flag))) count++;
  }
  return count;
}

/** True when `version` ("7.2.4") is at least `least` ("7.2"). */
export function versionAtLeast(version: string, least: string): boolean {
  const have = version.split(".").map(Number);
  const want = least.split(".").map(Number);
  for (let i = 0; i < want.length; i++) {
    const a = have[i] ?? 0;
    const b = want[i] ?? 0;
    if (a !== b) return a > b;
  }
  return true;
}
