import { loadConfigOrExit } from "../lib/config.ts";
import { startOrExit } from "../lib/exit.ts";
import { createLogger } from "../lib/logger.ts";
import { logProcessStats } from "../lib/process-stats.ts";
import { Shutdown } from "../lib/shutdown.ts";
import { serveSyncerMetrics } from "./metrics.ts";
import { startSyncer, syncerShutdownTimeoutMs } from "./process.ts";

// One syncer, as production runs them (two or more, sharing the shards): `npm run start:syncer`.
const config = loadConfigOrExit();
const logger = createLogger({ level: config.logLevel, role: "syncer" });
const shutdown = new Shutdown(logger, syncerShutdownTimeoutMs(config));
shutdown.listen();
shutdown.add("process stats", logProcessStats(logger, config.statsLogIntervalMs));
await startOrExit(logger, async () => {
  const running = await startSyncer(config, logger, shutdown);
  await serveSyncerMetrics(running, { host: config.http.host, port: config.metrics.port, logger, shutdown });
});
