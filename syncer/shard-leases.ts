import { createHash, randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { hostname } from "node:os";
import type { ShardKeys } from "../lib/redis/keyspace.ts";
import type { Scripts } from "../lib/redis/scripts.ts";

export interface ShardLeasesOptions {
  scripts: Pick<Scripts, "claimLease" | "releaseLease" | "syncersHeartbeat" | "syncerLeaves">;
  shards: readonly ShardKeys[];
  ttlMs: number;
  /** How often a syncer holding its share renews; a third of the TTL leaves two chances before a lapse. */
  renewEveryMs?: number;
  /**
   * How often a syncer short of its share looks for free shards: a shard whose syncer died is taken within
   * about TTL + this.
   */
  standbyPollMs?: number;
  /** A shard being applied right now: it is not given up until its batch is done (see rebalancing). */
  isBusy?: (shard: number) => boolean;
  /** Told of every lease call that Redis refused or did not answer (the leases go on as before). */
  onClaimError?: (error: unknown) => void;
  /** Told of every round of lease calls Redis answered. */
  onClaimAnswered?: () => void;
}

/**
 * The syncers' share of the shards: one lease per shard, a Redis key holding its syncer's id with a TTL.
 *
 * Every syncer alive says so in a sorted set (syncers-heartbeat.lua) and holds at most its fair share,
 * ceil(shards / syncers alive). Each prefers the shards that rank first for its id (rendezvous hashing), so
 * the shares stay put while the set of syncers does. When one joins, the others give up what is over their
 * new share at their next renewal and it takes them; when one leaves, or dies and stops renewing, the
 * others' share grows and they take its shards once its leases are released or lapse. One syncer alone
 * holds every shard.
 *
 * A lease keeps two syncers off one shard's work, nothing more: correctness never depends on it (the ledger
 * and the shard's advisory lock, see apply.ts). A lease is judged on the local monotonic clock: after a
 * failed renewal it is given up once the TTL last secured has run out, even if Redis cannot be asked.
 *
 * Emits "acquired", "released" (given up: over its share, or on release()) and "lost" (lapsed or taken: its
 * renewals failed) with the shard numbers that changed in one round.
 */
export class ShardLeases extends EventEmitter<{
  acquired: [shards: number[]];
  released: [shards: number[]];
  lost: [shards: number[]];
}> {
  readonly holderId = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  readonly #options: ShardLeasesOptions & { renewEveryMs: number; standbyPollMs: number };
  /** The shards in this holder's order of preference. */
  readonly #preferred: readonly ShardKeys[];
  readonly #heldUntil = new Map<number, number>();
  #believedHeld = new Set<number>();
  /** Given up on purpose since the last transition report. */
  #givenUp = new Set<number>();
  /** Syncers alive at the last heartbeat Redis answered (this one included). */
  #alive = 1;
  #timer: NodeJS.Timeout | undefined;
  /** Bumped by release(): a claim already on the wire then must not bring a lease back. */
  #generation = 0;

  constructor(options: ShardLeasesOptions) {
    super();
    this.#options = {
      renewEveryMs: Math.max(10, Math.floor(options.ttlMs / 3)),
      standbyPollMs: Math.max(10, Math.floor(options.ttlMs / 12)),
      ...options,
    };
    const rank = (shard: ShardKeys) =>
      createHash("sha256").update(`${this.holderId}\n${shard.shard}`).digest().readUInt32BE(0);
    this.#preferred = [...options.shards].sort((a, b) => rank(a) - rank(b));
  }

  isHeld(shard: number): boolean {
    return performance.now() < (this.#heldUntil.get(shard) ?? 0);
  }

  /** The shards held now, in shard order. */
  held(): ShardKeys[] {
    return this.#options.shards.filter((shard) => this.isHeld(shard.shard));
  }

  start(): void {
    const tick = async () => {
      const share = await this.claim();
      const delay = this.held().length < share ? this.#options.standbyPollMs : this.#options.renewEveryMs;
      if (this.#timer !== undefined) this.#timer = setTimeout(tick, delay);
    };
    this.#timer = setTimeout(tick, 0);
  }

  /**
   * One round: says this syncer is alive, gives up what is over its share (unless busy), renews what it
   * keeps and claims free shards up to its share. Resolves to the share.
   *
   * Every lease call stands on its own: on Redis Cluster the shards' leases live on different masters, and
   * one that does not answer must not keep the others from being renewed. Renewals and releases go out at
   * once; free shards are claimed one at a time, in order of preference, until the share is reached.
   */
  async claim(): Promise<number> {
    const { scripts, ttlMs, shards } = this.#options;
    const generation = this.#generation;
    let answered = true;
    const fail = (error: unknown) => {
      answered = false;
      this.#options.onClaimError?.(error);
    };
    try {
      this.#alive = await scripts.syncersHeartbeat(this.holderId, ttlMs);
    } catch (error) {
      // The count last read stands in: the leases are still worth renewing.
      fail(error);
    }
    const share = Math.ceil(shards.length / Math.max(1, this.#alive));
    const held = this.#preferred.filter((shard) => this.isHeld(shard.shard));
    const over = new Set(held.slice(share).filter((shard) => !this.#options.isBusy?.(shard.shard)));
    const kept = held.filter((shard) => !over.has(shard));
    for (const shard of over) {
      this.#heldUntil.delete(shard.shard);
      this.#givenUp.add(shard.shard);
    }
    const claimOne = async (shard: ShardKeys): Promise<boolean> => {
      // Count the TTL from before the request: the key may have been set at any moment after it.
      const claimedAt = performance.now();
      try {
        const holds = await scripts.claimLease(shard, this.holderId, ttlMs);
        if (generation !== this.#generation) return false;
        if (holds) this.#heldUntil.set(shard.shard, claimedAt + ttlMs);
        else this.#heldUntil.delete(shard.shard);
        return holds;
      } catch (error) {
        // Keep what we had: the lease is still ours until its #heldUntil, and lost after.
        fail(error);
        return false;
      }
    };
    await Promise.all([
      ...[...over].map((shard) => scripts.releaseLease(shard, this.holderId).catch(fail)),
      ...kept.map(claimOne),
    ]);
    let holding = kept.filter((shard) => this.isHeld(shard.shard)).length;
    for (const shard of this.#preferred) {
      if (holding >= share || generation !== this.#generation) break;
      if (this.isHeld(shard.shard) || over.has(shard)) continue;
      if (await claimOne(shard)) holding += 1;
    }
    if (answered) this.#options.onClaimAnswered?.();
    this.#emitTransitions();
    return share;
  }

  /** Stops renewing, gives every lease up and leaves the living, so the others take over at once. */
  async release(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#generation++;
    // Only what is still held is given up; a lease that has lapsed meanwhile was lost.
    for (const shard of this.#heldUntil.keys()) if (this.isHeld(shard)) this.#givenUp.add(shard);
    this.#heldUntil.clear();
    const { scripts } = this.#options;
    // Asked for every shard, held or not: a claim still on the wire may just have taken one, and commands on
    // one connection run in order, so these run after it.
    await Promise.all([
      ...this.#options.shards.map((shard) => scripts.releaseLease(shard, this.holderId).catch(() => {})),
      scripts.syncerLeaves(this.holderId).catch(() => {}),
    ]);
    this.#emitTransitions();
  }

  #emitTransitions(): void {
    const now = new Set(this.held().map((shard) => shard.shard));
    const acquired = [...now].filter((shard) => !this.#believedHeld.has(shard));
    const gone = [...this.#believedHeld].filter((shard) => !now.has(shard));
    const released = gone.filter((shard) => this.#givenUp.has(shard));
    const lost = gone.filter((shard) => !this.#givenUp.has(shard));
    this.#believedHeld = now;
    this.#givenUp.clear();
    if (released.length > 0) this.emit("released", released);
    if (lost.length > 0) this.emit("lost", lost);
    if (acquired.length > 0) this.emit("acquired", acquired);
  }
}
