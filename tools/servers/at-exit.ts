const cleanups = new Set<() => void>();

/**
 * Runs `cleanup` once when this process exits, however it exits short of SIGKILL: a test run that crashes
 * or forgets a teardown must not leave servers or their data behind. Registering the same function again
 * does nothing. The latest registered runs first: a server's directory exists before the server, so the
 * server dies before its directory is removed.
 */
export function atExit(cleanup: () => void): void {
  if (cleanups.size === 0) {
    process.on("exit", () => {
      for (const run of [...cleanups].reverse()) {
        try {
          run();
        } catch {
          // Best effort: the process is exiting anyway.
        }
      }
    });
  }
  cleanups.add(cleanup);
}
