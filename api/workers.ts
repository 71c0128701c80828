import cluster, { type Worker } from "node:cluster";
import { once } from "node:events";
import type { Logger } from "../lib/logger.ts";
import type { Shutdown } from "../lib/shutdown.ts";

const SHUTDOWN_MESSAGE = "tally:shutdown";
const RESPAWN_DELAY_MS = 1_000;

/**
 * Runs the API in `count` worker processes that share the listening port (node:cluster), so one API node
 * uses every core. Call it in the primary; workers run `startApi` themselves (see `isApiWorker`).
 *
 * A worker that dies unexpectedly is replaced after a second. On shutdown the primary asks every worker to
 * drain over IPC rather than with a signal: a terminal's Ctrl-C already signals the whole process group,
 * and a second signal would force the worker out mid-drain.
 */
export function forkApiWorkers(count: number, logger: Logger, shutdown: Shutdown): void {
  let stopping = false;
  const fork = () => {
    const worker = cluster.fork();
    worker.on("exit", (code, signal) => {
      if (stopping) return;
      logger.error(
        { workerPid: worker.process.pid, code, signal },
        "api worker died; starting a replacement",
      );
      setTimeout(() => {
        if (!stopping) fork();
      }, RESPAWN_DELAY_MS).unref();
    });
    return worker;
  };
  for (let i = 0; i < count; i++) fork();
  logger.info({ workers: count }, "api workers started");

  shutdown.add("api workers", async () => {
    stopping = true;
    const workers = Object.values(cluster.workers ?? {}).filter(
      (worker): worker is Worker => worker !== undefined,
    );
    await Promise.all(
      workers.map(async (worker) => {
        if (worker.isDead()) return;
        const exited = once(worker, "exit");
        worker.send(SHUTDOWN_MESSAGE);
        const [code] = (await exited) as [number | null];
        if (code !== 0) throw new Error(`api worker ${worker.process.pid} exited with ${code}`);
      }),
    );
  });
}

export function isApiWorker(): boolean {
  return cluster.isWorker;
}

/** In a worker: drain and exit when the primary asks. */
export function listenForPrimaryShutdown(shutdown: Shutdown): void {
  process.on("message", (message) => {
    if (message === SHUTDOWN_MESSAGE) void shutdown.run().then((failed) => process.exit(failed ? 1 : 0));
  });
}
