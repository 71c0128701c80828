import cluster, { type Worker } from "node:cluster";
import { once } from "node:events";
import { exitForOperator, exitForOperatorMessage } from "../lib/exit.ts";
import type { Logger } from "../lib/logger.ts";
import type { Shutdown } from "../lib/shutdown.ts";

const SHUTDOWN_MESSAGE = "tally:shutdown";
const RESPAWN_DELAY_MS = 1_000;
// Under load a worker's young generation grows to V8's cap (16 MB per semi-space on 64-bit), and its RSS
// with it. At 8 MB, peak RSS per worker in `npm run bench` fell from 124–149 to 112–126 MB, with no change
// in throughput beyond the machine's noise (docs/performance.md).
const SEMI_SPACE_MB = 8;
const SEMI_SPACE_FLAG = /^--max[-_]semi[-_]space[-_]size\b/;

/**
 * Runs the API in `count` worker processes that share the listening port (node:cluster), so one API node
 * uses every core. Call it in the primary; workers run `startApiInstance` themselves (see `isApiWorker`).
 *
 * A worker that dies unexpectedly is replaced after a second. On shutdown the primary asks every worker to
 * drain over IPC rather than with a signal: a terminal's Ctrl-C already signals the whole process group,
 * and a second signal would force the worker out mid-drain.
 */
export function forkApiWorkers(count: number, logger: Logger, shutdown: Shutdown): void {
  cluster.setupPrimary({ execArgv: workerExecArgv(process.execArgv, process.env.NODE_OPTIONS) });
  let stopping = false;
  const fork = () => {
    const worker = cluster.fork();
    worker.on("message", (message: unknown) => {
      const exit = exitForOperatorMessage(message);
      if (exit === undefined) return;
      // A replacement would meet the same setting: stop the node, with the worker's line printed once.
      stopping = true;
      exitForOperator(logger, exit.message, exit.exitCode);
    });
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

/**
 * The node flags for API workers: the primary's, plus a cap on the young generation unless the operator set
 * one (on the command line or in NODE_OPTIONS, which workers inherit): theirs wins.
 */
export function workerExecArgv(primaryExecArgv: readonly string[], nodeOptions = ""): string[] {
  const operatorFlags = [...primaryExecArgv, ...nodeOptions.split(/\s+/)];
  return operatorFlags.some((flag) => SEMI_SPACE_FLAG.test(flag))
    ? [...primaryExecArgv]
    : [...primaryExecArgv, `--max-semi-space-size=${SEMI_SPACE_MB}`];
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
