import { setTimeout as sleep } from "node:timers/promises";
import { ConfigError } from "../lib/config.ts";
import type { Logger } from "../lib/logger.ts";
import type { StepHook, SyncStep } from "./flush-shard.ts";

/**
 * Deterministic fault points for the fault-injection suite, which drives real syncer processes and needs
 * them to die (or stall) at an exact step of the protocol. Off unless SYNC_FAULT_INJECTION is set:
 *
 *   <step>:kill[@n]      SIGKILL this process the n-th time (default 1st) it reaches <step>
 *   <step>:stall=<ms>    pause <ms> every time it reaches <step> (e.g. to outlive the lease mid-cycle)
 *
 * Steps: before-swap, after-swap, during-read, before-commit (transaction open, rows upserted, not yet
 * committed), after-commit (committed, flushing hash not yet deleted).
 */
export type FaultSpec =
  | { step: SyncStep; action: "kill"; nth: number }
  | { step: SyncStep; action: "stall"; ms: number };

const STEPS: readonly SyncStep[] = [
  "before-swap",
  "after-swap",
  "during-read",
  "before-commit",
  "after-commit",
];
const FORMAT = /^([a-z-]+):(?:kill(?:@(\d+))?|stall=(\d+))$/;

export function parseFaultSpec(text: string): FaultSpec {
  const match = FORMAT.exec(text);
  const step = STEPS.find((candidate) => candidate === match?.[1]);
  if (!match || !step) {
    throw new ConfigError(
      `SYNC_FAULT_INJECTION must be <step>:kill[@n] or <step>:stall=<ms> with a step of ${STEPS.join(", ")}`,
    );
  }
  if (match[3] !== undefined) return { step, action: "stall", ms: Number(match[3]) };
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
      await sleep(spec.ms);
      return;
    }
    reached++;
    if (reached < spec.nth) return;
    logger.warn({ step, shard }, "fault injection: SIGKILL");
    // No flush, no cleanup: exactly what a crash looks like to Redis and Postgres.
    process.kill(process.pid, "SIGKILL");
    await sleep(60_000);
  };
}
