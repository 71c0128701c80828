import { monitorEventLoopDelay } from "node:perf_hooks";
import type { Logger } from "./logger.ts";

/**
 * Logs memory and event-loop delay every `intervalMs`, so a leak or a blocked loop shows up in the logs of a
 * long run (`npm run soak` reads these lines). Returns a function that stops it.
 */
export function logProcessStats(logger: Logger, intervalMs: number): () => void {
  if (intervalMs <= 0) return () => {};
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const timer = setInterval(() => {
    const memory = process.memoryUsage();
    logger.info(
      {
        rssMb: round(memory.rss / 2 ** 20),
        heapUsedMb: round(memory.heapUsed / 2 ** 20),
        eventLoopDelayMs: {
          p50: round(delay.percentile(50) / 1e6),
          p99: round(delay.percentile(99) / 1e6),
          max: round(delay.max / 1e6),
        },
      },
      "process stats",
    );
    delay.reset();
  }, intervalMs);
  timer.unref();
  return () => {
    clearInterval(timer);
    delay.disable();
  };
}

function round(value: number): number {
  return Math.round(value * 10) / 10;
}
