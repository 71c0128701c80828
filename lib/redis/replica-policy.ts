import type { ReplicaReading } from "./replicas.ts";

/**
 * How long a replica seen connected to a master keeps counting, where nothing but connections tells
 * (a single REDIS_URL): long enough to outlast a replication link that drops and comes back.
 */
export const REPLICA_MEMORY_MS = 60_000;

interface MasterState {
  reading: ReplicaReading | undefined;
  /** When `reading` was taken (performance.now()). */
  readAt: number;
  /** When a replica was last seen connected to it: by a reading, or by a write's ROLE. */
  connectedAt: number;
}

/**
 * Decides how many replicas a write to each master must reach before it is acknowledged, from what the
 * masters and the topology said. Pure: the readings and the clock are handed in.
 *
 * With a number (REDIS_WAIT_REPLICAS=n), always that. With "auto", one wherever a failover could promote a
 * replica in the master's place, and none where nothing could:
 * - where a topology names the replicas (the cluster bus, the Sentinels), those it does not hold for failed
 *   count, even while their replication link is down: such a replica may be promoted behind. A replica seen
 *   connected since the last reading counts too, until the next reading says whether it is alive;
 * - without one (a single REDIS_URL), a replica counts from the moment it is seen connected until
 *   REPLICA_MEMORY_MS after it was last seen, so that a link that drops for a moment is still waited for;
 * - a master not read yet waits for one, until it is read.
 */
export class ReplicaPolicy {
  readonly #configured: number | "auto";
  readonly #topology: boolean;
  readonly #masters = new Map<string, MasterState>();

  /** `topology`: the deployment has one that names the replicas (Redis Cluster, Sentinel). */
  constructor(configured: number | "auto", topology: boolean) {
    this.#configured = configured;
    this.#topology = topology;
  }

  /** True when the replicas connected to a master matter: "auto" looks at them with every round of writes. */
  get observesConnections(): boolean {
    return this.#configured === "auto";
  }

  knows(node: string): boolean {
    return this.#masters.get(node)?.reading !== undefined;
  }

  noteReading(reading: ReplicaReading, now: number): void {
    const state = this.#state(reading.node);
    state.reading = reading;
    state.readAt = now;
    if (reading.connected > 0 || reading.promotable > 0) state.connectedAt = now;
  }

  /** `connected` replicas were attached to `node` at `now` (a write's ROLE). */
  noteConnected(node: string, connected: number, now: number): void {
    if (connected > 0) this.#state(node).connectedAt = now;
  }

  /** Forgets the masters not read since `since`: masters no more (a failover demoted them, or they left). */
  forgetUnreadSince(since: number): void {
    for (const [node, state] of this.#masters) if (state.readAt < since) this.#masters.delete(node);
  }

  /** The latest reading of every master known. */
  get readings(): ReplicaReading[] {
    return [...this.#masters.values()].flatMap(({ reading }) => (reading === undefined ? [] : [reading]));
  }

  required(node: string, now: number): number {
    if (this.#configured !== "auto") return this.#configured;
    const state = this.#masters.get(node);
    if (state?.reading === undefined) return 1;
    if (this.#topology) {
      return state.reading.promotable > 0 || state.connectedAt > state.readAt ? 1 : 0;
    }
    return now - state.connectedAt < REPLICA_MEMORY_MS ? 1 : 0;
  }

  #state(node: string): MasterState {
    let state = this.#masters.get(node);
    if (state === undefined) {
      state = {
        reading: undefined,
        readAt: Number.NEGATIVE_INFINITY,
        connectedAt: Number.NEGATIVE_INFINITY,
      };
      this.#masters.set(node, state);
    }
    return state;
  }
}
