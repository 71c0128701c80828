import { createLogger } from "../../lib/logger.ts";

export const silentLogger = createLogger({ level: "silent", role: "test" });
