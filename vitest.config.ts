import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    globalSetup: ["test/harness/global-setup.ts"],
    include: ["test/**/*.test.ts"],
    pool: "forks",
    // Test files run in parallel against the shared servers; the machine has 2 cores.
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    restoreMocks: true,
    // The JSON report lets .ci/run print a plain "N passed, N failed" closing line, in CI or run by hand.
    reporters: ["default", "json"],
    outputFile: { json: ".tmp/vitest-report.json" },
  },
});
