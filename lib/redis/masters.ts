import calculateSlot from "cluster-key-slot";
import { Cluster, type Redis } from "ioredis";
import type { RedisClient } from "./client.ts";
import { suggestsStaleSlotMap } from "./errors.ts";

/** One Redis master's connection, and its name (host:port) for readings and logs. */
export interface MasterConnection {
  node: string;
  connection: Redis;
}

/** host:port of the server a connection talks to: for a Sentinel client, the master it found. */
export function nodeName(connection: Redis): string {
  const stream = connection.stream as { remoteAddress?: string; remotePort?: number } | undefined;
  if (stream?.remoteAddress !== undefined && stream.remotePort !== undefined) {
    return `${stream.remoteAddress}:${stream.remotePort}`;
  }
  return `${connection.options.host}:${connection.options.port}`;
}

/**
 * Finds the connection of the master that serves a key. A write that must be confirmed by the master's
 * replicas runs on that connection, and the WAIT after it too: WAIT counts the replicas holding the writes
 * of the connection it is sent on, so both must share one, and a write must not be sent on to another
 * node by a MOVED. On a single Redis (or the master a Sentinel names) that is the client itself; on a Redis
 * Cluster it is the connection the client keeps to the slot's master, which follows no redirection: a
 * write refused with MOVED fails, and its failure refreshes the client's slot map.
 */
export class Masters {
  readonly #redis: RedisClient;
  readonly #slots = new Map<string, number>();
  #byNode: Map<string, Redis> | undefined;
  /** The one master of a client that is not a Cluster's, named once per connection. */
  #single: MasterConnection | undefined;

  constructor(redis: RedisClient) {
    this.#redis = redis;
    if (redis instanceof Cluster) {
      const forget = () => {
        this.#byNode = undefined;
      };
      redis.on("+node", forget);
      redis.on("-node", forget);
    } else {
      // A Sentinel client reconnects to another master after a failover.
      redis.on("ready", () => {
        this.#single = undefined;
      });
    }
  }

  /** The master serving `key`'s slot; throws when the Cluster's slot map does not name one yet. */
  of(key: string): MasterConnection {
    const redis = this.#redis;
    if (!(redis instanceof Cluster)) {
      this.#single ??= { node: nodeName(redis), connection: redis };
      return this.#single;
    }
    let slot = this.#slots.get(key);
    if (slot === undefined) {
      slot = calculateSlot(key);
      this.#slots.set(key, slot);
    }
    const node = redis.slots[slot]?.[0];
    // Keyed as the client keys its pool (and its slot map): by the address the Cluster announced.
    this.#byNode ??= new Map(
      redis.nodes("all").map((instance) => [`${instance.options.host}:${instance.options.port}`, instance]),
    );
    const connection = node === undefined ? undefined : this.#byNode.get(node);
    if (node === undefined || connection === undefined) {
      redis.refreshSlotsCache();
      throw new SlotMapError(`the Redis Cluster slot map names no master for slot ${slot} yet`);
    }
    return { node, connection };
  }

  /**
   * A write on a master's connection failed: if the failure says the slot map may be stale (the slot moved,
   * the master is gone), the Cluster client reloads it, so the next write finds the slot's new master.
   */
  noteFailure(error: unknown): void {
    const redis = this.#redis;
    if (redis instanceof Cluster && suggestsStaleSlotMap(error)) redis.refreshSlotsCache();
  }
}

/** The Cluster's slot map is not loaded (connecting) or lacks the slot: the write was not sent. */
export class SlotMapError extends Error {
  override name = "SlotMapError";
}
