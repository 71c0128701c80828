import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { hostname } from "node:os";
import type { Scripts } from "../lib/redis/scripts.ts";

export interface LeaseOptions {
  scripts: Pick<Scripts, "claimLease" | "releaseLease">;
  ttlMs: number;
  /** How often the holder extends; a third of the TTL leaves two chances before the lease lapses. */
  renewEveryMs?: number;
  /**
   * How often a standby tries to claim. Shorter than the renewal period (one cheap GET-like script call),
   * so a dead leader is replaced within about TTL + this, not TTL + a third of it.
   */
  standbyPollMs?: number;
  /** Told of every claim that Redis refused or did not answer (the lease itself goes on as before). */
  onClaimError?: (error: unknown) => void;
  /** Told of every claim Redis answered. */
  onClaimAnswered?: () => void;
}

/**
 * The leader lease: one Redis key holding the leader's id with a TTL, claimed and extended by a Lua script.
 * It keeps standbys idle, nothing more; the syncer is correct with two leaders at once (see apply.ts).
 * Leadership is judged on the local monotonic clock: after a failed renewal we stop believing we lead once
 * the TTL we last secured has run out, even if Redis cannot be asked.
 *
 * Emits "acquired" and "lost".
 */
export class LeaderLease extends EventEmitter<{ acquired: []; lost: [] }> {
  readonly holderId = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  readonly #options: Required<Omit<LeaseOptions, "onClaimError" | "onClaimAnswered">> & LeaseOptions;
  #heldUntil = 0;
  #timer: NodeJS.Timeout | undefined;
  #wasLeader = false;
  /** Bumped by release(): a claim already on the wire then must not bring the lease back. */
  #generation = 0;

  constructor(options: LeaseOptions) {
    super();
    this.#options = {
      renewEveryMs: Math.max(10, Math.floor(options.ttlMs / 3)),
      standbyPollMs: Math.max(10, Math.floor(options.ttlMs / 12)),
      ...options,
    };
  }

  isHeld(): boolean {
    return performance.now() < this.#heldUntil;
  }

  start(): void {
    const tick = async () => {
      await this.claim();
      const delay = this.isHeld() ? this.#options.renewEveryMs : this.#options.standbyPollMs;
      if (this.#timer !== undefined) this.#timer = setTimeout(tick, delay);
    };
    this.#timer = setTimeout(tick, 0);
  }

  /** Claims or extends the lease once; resolves to whether we hold it. */
  async claim(): Promise<boolean> {
    const attemptedAt = performance.now();
    const generation = this.#generation;
    try {
      const held = await this.#options.scripts.claimLease(this.holderId, this.#options.ttlMs);
      // Count the TTL from before the request: the key may have been set at any moment after it.
      if (generation === this.#generation) this.#heldUntil = held ? attemptedAt + this.#options.ttlMs : 0;
      this.#options.onClaimAnswered?.();
    } catch (error) {
      // Keep what we had: the lease is still ours until #heldUntil, and lost after.
      this.#options.onClaimError?.(error);
    }
    this.#emitTransitions();
    return this.isHeld();
  }

  /** Stops renewing and gives the lease up so a standby takes over at once. */
  async release(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#generation++;
    this.#heldUntil = 0;
    // Asked even when we do not believe we hold it: a claim still on the wire may just have taken it, and
    // commands on one connection run in order, so this release runs after that claim.
    await this.#options.scripts.releaseLease(this.holderId).catch(() => {});
    this.#emitTransitions();
  }

  #emitTransitions(): void {
    const isLeader = this.isHeld();
    if (isLeader === this.#wasLeader) return;
    this.#wasLeader = isLeader;
    this.emit(isLeader ? "acquired" : "lost");
  }
}
