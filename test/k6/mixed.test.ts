import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { findK6 } from "../../tools/servers/binaries.ts";
import { TEST_SECRET } from "../support/api.ts";
import { Deployment } from "../support/deployment.ts";

const run = promisify(execFile);
const SCRIPT = fileURLToPath(new URL("../../k6/mixed.js", import.meta.url));

// k6/mixed.js run for real by k6 against start:api and start:syncer processes: reads and listings beside
// writes, every check and threshold of the script holding. Short and at low rates: a test that it works,
// not a benchmark.

describe("k6/mixed.js", () => {
  it("passes its checks and thresholds with reads and listings beside writes", {
    timeout: 90_000,
  }, async () => {
    const d = await Deployment.forTest({ env: { SYNC_SHARDS: "4", SYNC_INTERVAL_MS: "1000" } });
    const api = await d.startApi();
    await d.startSyncer();
    const { stdout } = await run(
      findK6(),
      ["run", "--quiet", "--no-color", "--summary-trend-stats", "p(95)", SCRIPT],
      {
        env: {
          ...process.env,
          BASE_URL: api.url,
          JWT_SECRET: TEST_SECRET,
          DURATION: "8s",
          WRITE_RATE: "50",
          READ_RATE: "4",
          LIST_RATE: "4",
          KEYS: "400",
          // Two cores shared with the harness and the service: latency bounds for a loaded test machine.
          P95_MS: "1000",
          READ_P95_MS: "2000",
          LIST_P95_MS: "2000",
          K6_NO_USAGE_REPORT: "true",
        },
        maxBuffer: 16 * 2 ** 20,
      },
    );
    expect(stdout).toMatch(/tally_counters_read/);
    expect(stdout).toMatch(/tally_pages_listed/);
    expect(stdout).not.toMatch(/thresholds on metrics .* have been crossed/);
  });
});
