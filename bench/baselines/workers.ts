import cluster from "node:cluster";

/**
 * Runs `serve` in `count` node:cluster workers sharing one port, as tally's API node runs its workers, so a
 * baseline and the service are compared on the same number of processes. The primary prints `ready` once
 * every worker listens.
 */
export function inWorkers(count: number, ready: string, serve: (listening: () => void) => void): void {
  if (cluster.isPrimary) {
    let listening = 0;
    for (let i = 0; i < count; i++) {
      cluster.fork().on("message", () => {
        listening += 1;
        if (listening === count) process.stdout.write(`${ready}\n`);
      });
    }
    return;
  }
  serve(() => process.send?.("listening"));
}

/** `<port> <workers>` from the command line. */
export function portAndWorkers(): { port: number; workers: number } {
  const port = Number(process.argv[2]);
  const workers = Number(process.argv[3] ?? 1);
  if (!Number.isInteger(port) || !Number.isInteger(workers) || workers < 1) {
    throw new Error(`usage: ${process.argv[1]} <port> <workers> [redis-url]`);
  }
  return { port, workers };
}
