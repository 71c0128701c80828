import type { Redis } from "ioredis";
import { Counter, type Registry } from "prom-client";
import { FailureStreak } from "../failure-streak.ts";
import type { Logger } from "../logger.ts";
import type { Masters } from "./masters.ts";

/** A write's result, and whether the replicas it had to reach confirmed holding it. */
export interface Acknowledged<T> {
  value: T;
  /** True when as many replicas as required hold the write (always, where none are required). */
  confirmed: boolean;
}

/** How many replicas a write to a master must reach (see ReplicaWatch, which decides it). */
export interface AcknowledgementPolicy {
  /** True when writes should also ask their master, now and then, which replicas are online (ROLE). */
  readonly observesConnections: boolean;
  /** Replicas that must hold a write to `node` (host:port, reached on `connection`) before it is acknowledged. */
  required(node: string, connection: Redis): number;
  /** `connected` replicas were online on `node` when a write was sent. */
  observe(node: string, connected: number): void;
  /** The replicas of `node` did not confirm a round in time. */
  fellShort(node: string, connection: Redis): void;
}

/** The policy of a deployment that waits for no replica. */
export const NO_REPLICAS: AcknowledgementPolicy = {
  observesConnections: false,
  required: () => 0,
  observe: () => {},
  fellShort: () => {},
};

export interface AcknowledgementOptions {
  masters: Masters;
  policy: AcknowledgementPolicy;
  /** How long Redis waits for them (WAIT's timeout); short of it, the write is unconfirmed. */
  timeoutMs: number;
  /** Wait for the AOF fsync of the master and of the replicas (WAITAOF) rather than for the replicas alone. */
  aof: boolean;
  /** Where a streak of waits that fall short is said, once; unlogged without. */
  logger?: Logger;
}

type WaitResult = "confirmed" | "short" | "failed";

/** Writes to one master, confirmed together by one WAIT. */
interface Round {
  writes: Promise<unknown>[];
  confirmed: Promise<boolean>;
  settle(confirmed: boolean): void;
}

/** One master connection: its open round, whether a WAIT is out on it, and when it was last asked ROLE. */
interface Connection {
  node: string;
  connection: Redis;
  open: Round | undefined;
  waiting: boolean;
  observedAt: number;
}

// Where the policy looks at the replicas connected to a master, a write asks ROLE at most this often.
const OBSERVE_EVERY_MS = 100;

/**
 * Writes to Redis that are acknowledged only once the master's replicas hold them, so that a failover to a
 * replica cannot undo what a client was told had been done.
 *
 * Each write runs on the connection of the master serving its key (see Masters). The writes sent to a
 * master in an event-loop turn share one WAIT, sent on that connection once they have all answered: WAIT
 * counts the replicas holding every write made on its connection so far, so one wait confirms the whole
 * turn and its cost is spread over every request in it (waiting for the answers first keeps a write that
 * had to be sent again, after NOSCRIPT, inside what the WAIT covers). A WAIT holds its connection until it
 * returns, so at most one is out per connection: the writes of the turns that end meanwhile join one round,
 * confirmed by the next WAIT. When the replicas do not answer, a write is answered after at most two
 * timeouts however many arrive, instead of queueing behind one WAIT per turn. A master that needs no
 * replica (a single Redis) costs nothing more than the write, and a ROLE every OBSERVE_EVERY_MS where the
 * policy watches for a replica that attaches.
 */
export class Acknowledgements {
  readonly #options: AcknowledgementOptions;
  readonly #connections = new WeakMap<Redis, Connection>();
  readonly #shortfalls: FailureStreak | undefined;
  readonly #waits = new Counter({
    name: "tally_redis_replica_waits_total",
    help: "WAITs (or WAITAOFs) sent after writes to a master: confirmed (enough replicas hold them), short (fewer within REDIS_WAIT_TIMEOUT_MS: the writes were answered as unconfirmed) or failed (no answer)",
    labelNames: ["result"] as const,
    registers: [],
  });

  constructor(options: AcknowledgementOptions) {
    this.#options = options;
    this.#shortfalls =
      options.logger &&
      new FailureStreak(
        options.logger,
        "the replicas do not confirm writes within REDIS_WAIT_TIMEOUT_MS: writes are answered 503 replication_unconfirmed (outcome unknown)",
      );
    for (const result of ["confirmed", "short", "failed"]) this.#waits.inc({ result }, 0);
  }

  register(registry: Registry): void {
    registry.registerMetric(this.#waits);
  }

  /**
   * Runs `write` on the connection of the master serving `key` (a key of the shard it writes), and resolves
   * once the replicas confirmed it or the wait fell short. Rejects as `write` does, with the slot map
   * refreshed where the failure says it is stale.
   */
  async write<T>(key: string, write: (connection: Redis) => Promise<T>): Promise<Acknowledged<T>> {
    const { policy } = this.#options;
    const { node, connection } = this.#options.masters.of(key);
    const state = this.#stateOf(node, connection);
    if (policy.observesConnections) this.#observe(state);
    const written = this.#send(write, connection);
    if (policy.required(node, connection) === 0) return { value: await written, confirmed: true };
    const round = this.#roundOn(state);
    round.writes.push(written);
    const value = await written;
    return { value, confirmed: await round.confirmed };
  }

  async #send<T>(write: (connection: Redis) => Promise<T>, connection: Redis): Promise<T> {
    try {
      return await write(connection);
    } catch (error) {
      this.#options.masters.noteFailure(error);
      throw error;
    }
  }

  #stateOf(node: string, connection: Redis): Connection {
    let state = this.#connections.get(connection);
    if (state === undefined) {
      state = { node, connection, open: undefined, waiting: false, observedAt: Number.NEGATIVE_INFINITY };
      this.#connections.set(connection, state);
    }
    return state;
  }

  /**
   * Asks the master which replicas are online (ROLE), sent with the write that triggers it and at most every
   * OBSERVE_EVERY_MS: a replica that attached since the policy last read the master is waited for from the
   * next write on.
   */
  #observe(state: Connection): void {
    const now = performance.now();
    if (now - state.observedAt < OBSERVE_EVERY_MS) return;
    state.observedAt = now;
    void onlineReplicas(state.connection).then((connected) => {
      if (connected !== undefined) this.#options.policy.observe(state.node, connected);
    });
  }

  /** The round taking writes on the connection, opened (and sealed at the end of the turn) if there is none. */
  #roundOn(state: Connection): Round {
    if (state.open !== undefined) return state.open;
    let settle: (confirmed: boolean) => void = () => {};
    const confirmed = new Promise<boolean>((resolve) => {
      settle = resolve;
    });
    const round: Round = { writes: [], confirmed, settle };
    state.open = round;
    const opened = state;
    setImmediate(() => this.#seal(opened));
    return round;
  }

  /** Closes the open round and sends its WAIT, unless a WAIT is out: then once that one has returned. */
  #seal(state: Connection): void {
    const round = state.open;
    if (round === undefined || state.waiting) return;
    state.open = undefined;
    state.waiting = true;
    void this.#confirm(round, state).then((confirmed) => {
      round.settle(confirmed);
      state.waiting = false;
      this.#seal(state);
    });
  }

  async #confirm(round: Round, { node, connection }: Connection): Promise<boolean> {
    const settled = await Promise.allSettled(round.writes);
    // Nothing was written: nothing to confirm, and nobody reads the answer.
    if (settled.every(({ status }) => status === "rejected")) return false;
    const { policy } = this.#options;
    const required = policy.required(node, connection);
    if (required === 0) return true;
    const result = await this.#wait(connection, required);
    this.#waits.inc({ result });
    if (result === "confirmed") this.#shortfalls?.succeeded();
    else {
      this.#shortfalls?.failed(`${required} replica(s) asked for`);
      policy.fellShort(node, connection);
    }
    return result === "confirmed";
  }

  async #wait(connection: Redis, required: number): Promise<WaitResult> {
    const { timeoutMs, aof } = this.#options;
    try {
      if (!aof) return (await connection.wait(required, timeoutMs)) >= required ? "confirmed" : "short";
      const [local, replicas] = (await connection.call("WAITAOF", 1, required, timeoutMs)) as [
        number,
        number,
      ];
      return local >= 1 && replicas >= required ? "confirmed" : "short";
    } catch (error) {
      this.#options.masters.noteFailure(error);
      return "failed";
    }
  }
}

/** How many replicas ROLE shows online on a master; undefined when it does not answer as a master. */
async function onlineReplicas(connection: Redis): Promise<number | undefined> {
  try {
    const role = (await connection.role()) as unknown[];
    return role[0] === "master" && Array.isArray(role[2]) ? role[2].length : undefined;
  } catch {
    return undefined;
  }
}
