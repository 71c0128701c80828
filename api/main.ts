import { loadConfigOrExit } from "../lib/config.ts";
import { startOrExit } from "../lib/exit.ts";
import { createLogger } from "../lib/logger.ts";
import { logProcessStats } from "../lib/process-stats.ts";
import { Shutdown } from "../lib/shutdown.ts";
import { startApiNode, startApiWorker } from "./node.ts";
import { isApiWorker } from "./workers.ts";

// One API node, as production runs it: `npm run start:api`, in API_WORKERS processes sharing the port.
const config = loadConfigOrExit();
const logger = createLogger({ level: config.logLevel, role: "api" });
const shutdown = new Shutdown(logger, config.http.shutdownTimeoutMs);
shutdown.listen();
shutdown.add("process stats", logProcessStats(logger, config.statsLogIntervalMs));
await startOrExit(logger, () =>
  isApiWorker()
    ? startApiWorker(config, logger, shutdown)
    : startApiNode(config, logger, shutdown, config.metrics.port),
);
