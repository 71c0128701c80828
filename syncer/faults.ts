import { writeSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { ConfigError } from "../lib/config.ts";
import type { Logger } from "../lib/logger.ts";
import type { StepHook, SyncStep } from "./flush-context.ts";

/**
 * Deterministic fault points for the fault-injection suite, which drives real syncer processes and needs
 * them to die (or stall) at an exact step of the protocol. Off unless SYNC_FAULT_INJECTION is set:
 *
 *   <step>:kill[@n]      SIGKILL this process the n-th time (default 1st) it reaches <step>
 *   <step>:stall=<ms>    pause <ms> (asynchronously) every time it reaches <step>
 *   <step>:freeze=<ms>   block the whole event loop <ms> every time, like a long GC pause: lease renewals
 *                        stop too, so the lease lapses mid-cycle and a standby takes over
 *
 * Steps: before-swap, after-swap, during-read, before-commit (transaction open, rows upserted, not yet
 * committed), after-commit (committed, flushing hash not yet deleted).
 */
export type FaultSpec =
  | { step: SyncStep; action: "kill"; nth: number }
  | { step: SyncStep; action: "stall"; ms: number }
  | { step: SyncStep; action: "freeze"; ms: number };

const STEPS: readonly SyncStep[] = [
  "before-swap",
  "after-swap",
  "during-read",
  "before-commit",
  "after-commit",
];
const FORMAT = /^([a-z-]+):(?:kill(?:@(\d+))?|(stall|freeze)=(\d+))$/;

export function parseFaultSpec(text: string): FaultSpec {
  const match = FORMAT.exec(text);
  const step = STEPS.find((candidate) => candidate === match?.[1]);
  if (!match || !step) {
    throw new ConfigError(
      `SYNC_FAULT_INJECTION must be <step>:kill[@n], <step>:stall=<ms> or <step>:freeze=<ms> with a step of ${STEPS.join(", ")}`,
    );
  }
  if (match[3] === "stall") return { step, action: "stall", ms: Number(match[4]) };
  if (match[3] === "freeze") return { step, action: "freeze", ms: Number(match[4]) };
  return { step, action: "kill", nth: Math.max(1, Number(match[2] ?? 1)) };
}

export function faultHookFromConfig(text: string | undefined, logger: Logger): StepHook | undefined {
  return text === undefined ? undefined : faultHook(parseFaultSpec(text), logger);
}

export function faultHook(spec: FaultSpec, logger: Logger): StepHook {
  let reached = 0;
  logger.warn({ fault: spec }, "fault injection is ON: this process will misbehave on purpose");
  return async (step, shard) => {
    if (step !== spec.step) return;
    if (spec.action === "stall") {
      // Said before the pause, so that a test can act while the syncer waits at the step.
      writeSync(
        1,
        `${JSON.stringify({ level: "warn", pid: process.pid, step, shard, msg: "fault injection: stall" })}\n`,
      );
      await sleep(spec.ms);
      return;
    }
    if (spec.action === "freeze") {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, spec.ms);
      return;
    }
    reached++;
    if (reached < spec.nth) return;
    // Written synchronously, unlike the logger's lines: an asynchronous write still queued when the signal
    // lands would be lost, and the test needs to see where the process died.
    writeSync(
      1,
      `${JSON.stringify({ level: "warn", pid: process.pid, step, shard, msg: "fault injection: SIGKILL" })}\n`,
    );
    // No cleanup of our own: exactly what a crash looks like to Redis and Postgres.
    process.kill(process.pid, "SIGKILL");
    await sleep(60_000);
  };
}
