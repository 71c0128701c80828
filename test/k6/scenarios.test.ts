import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findK6 } from "../../tools/servers/binaries.ts";
import { startRedis } from "../../tools/servers/redis.ts";
import { TEST_SECRET } from "../support/api.ts";
import { type ApiProcess, Deployment } from "../support/deployment.ts";

const run = promisify(execFile);
const K6 = findK6();

// The k6 scenarios run for real by k6 against start:api and start:syncer processes, with their own
// thresholds: the ones that fit in CI, shortened where their default runs a minute. Every threshold judges
// the service; what k6 itself could not send is in its summary. Latency bounds are those of a 2-core machine
// that also runs the other test files.

const LOADED_MACHINE = { P95_MS: "500", P99_MS: "1500", READ_P95_MS: "2000", LIST_P95_MS: "2000" };

/** Runs a script; resolves with its summary, rejects (k6's exit code on the error) when a threshold fails. */
async function k6(script: string, baseUrl: string, env: Record<string, string> = {}): Promise<string> {
  const { stdout } = await run(
    K6 as string,
    ["run", "--quiet", "--no-color", fileURLToPath(new URL(`../../k6/${script}`, import.meta.url))],
    {
      env: { ...process.env, BASE_URL: baseUrl, JWT_SECRET: TEST_SECRET, K6_NO_USAGE_REPORT: "true", ...env },
      maxBuffer: 16 * 2 ** 20,
      timeout: 120_000,
    },
  );
  // For docs/testing.md: what each run sent and how it went.
  const figures = stdout
    .split("\n")
    .filter((line) => /^\s*(checks|http_req_failed|http_reqs|dropped_iterations|iterations)\b/.test(line))
    .map((line) => line.trim().replace(/\s+/g, " "));
  console.log(`k6 ${script} ${JSON.stringify(env)}: ${figures.join("; ")}`);
  return stdout;
}

describe.skipIf(K6 === undefined)(
  "the k6 scenarios (skipped without k6: set K6_BIN or put k6 on PATH)",
  () => {
    let deployment: Deployment;
    let api: ApiProcess;
    beforeAll(async () => {
      deployment = await Deployment.create({ env: { SYNC_SHARDS: "4" } });
      api = await deployment.startApi();
      await deployment.startSyncer();
    }, 60_000);
    afterAll(() => deployment?.close());

    it("smoke.js passes with its defaults", { timeout: 120_000 }, async () => {
      expect(await k6("smoke.js", api.url)).toMatch(/smoke_iterations_completed/);
    });

    it("verify.js: every key's total and persisted total are exactly the plan's sums", {
      timeout: 120_000,
    }, async () => {
      expect(await k6("verify.js", api.url)).toMatch(/verify_keys_checked/);
    });

    it("batch.js, load mode, 10 s at its default rate: no 429 from the round-robin of clients", {
      timeout: 120_000,
    }, async () => {
      const summary = await k6("batch.js", api.url, { DURATION: "10s", ...LOADED_MACHINE });
      expect(summary).toMatch(/tally_batch_increments_accepted/);
    });

    it("batch.js, verify mode: a retried batch counts once", { timeout: 120_000 }, async () => {
      expect(await k6("batch.js", api.url, { VERIFY: "true" })).toMatch(/verify_keys_checked/);
    });

    it("load.js, 10 s at 500/s", { timeout: 120_000 }, async () => {
      const summary = await k6("load.js", api.url, { DURATION: "10s", RATE: "500", ...LOADED_MACHINE });
      expect(summary).toMatch(/tally_increments_accepted/);
    });

    it("mixed.js: reads and listings beside writes, 8 s at low rates", { timeout: 120_000 }, async () => {
      const summary = await k6("mixed.js", api.url, {
        DURATION: "8s",
        WRITE_RATE: "50",
        READ_RATE: "4",
        LIST_RATE: "4",
        KEYS: "400",
        ...LOADED_MACHINE,
      });
      expect(summary).toMatch(/tally_counters_read/);
      expect(summary).toMatch(/tally_pages_listed/);
    });

    it("fail with exit code 99 when the service's Redis is down", { timeout: 120_000 }, async () => {
      const redis = await startRedis();
      const broken = await Deployment.create({ redisUrl: redis.url });
      try {
        const brokenApi = await broken.startApi();
        await redis.stop();
        await expect(k6("smoke.js", brokenApi.url, { ITERATIONS: "3" })).rejects.toMatchObject({ code: 99 });
      } finally {
        await broken.close();
        await redis.destroy();
      }
    });
  },
);
