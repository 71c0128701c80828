// Verify: the scenario that checks tally's central promise under concurrency, that the sum of the accepted
// increments per key is what tally reports, at once as `total` and, after the syncer's next cycles, as
// `persisted` (Postgres). The run is deterministic, so the expected sums need no bookkeeping across VUs:
// per-vu-iterations runs iteration __ITER of VU __VU exactly once, and planned(vu, iter) says which key and
// value it sends; teardown() recomputes the same plan and compares. Any increment that does not end in a
// 202, or any key whose numbers differ, fails the run.
//   k6 run -e JWT_SECRET=… k6/verify.js
//   k6 run -e JWT_SECRET=… -e VUS=50 -e ITERATIONS=400 -e KEYS=16 k6/verify.js
// Size it with -e VUS/ITERATIONS, not --vus/--iterations: those flags replace the scenario and its plan.
import { Counter, Rate } from "k6/metrics";
import {
  clientTokens,
  envDuration,
  envInt,
  increment,
  newRunId,
  recordIncrement,
  retryWhileRateLimited,
  verifyRunOptions,
  verifyTotals,
} from "./lib.js";

const VUS = Math.max(1, envInt("VUS", 10));
const ITERATIONS = Math.max(1, envInt("ITERATIONS", 100));
const KEYS = Math.max(1, envInt("KEYS", 8));
// Postgres is at most ~10 s behind what was accepted (5 s cycle plus the cycle itself).
const PERSIST_TIMEOUT = envDuration("PERSIST_TIMEOUT", "15s");
// A 429 stored nothing, so retrying it cannot double-count; any other non-202 fails the run.
const MAX_RETRIES_429 = envInt("MAX_RETRIES_429", 20);

// How the run fails when the numbers are wrong: teardown() records one verify_ok sample per key and the
// thresholds below turn a single false into exit code 99, with the usual summary. Samples emitted in
// teardown() count like any others: k6 runs teardown() as the last step of the test run and evaluates the
// thresholds one final time only after every sample has been flushed. Throwing is not the mechanism: fail()
// is documented as aborting the current iteration without changing the exit code, and an exception in
// teardown() left the exit code at 0 before grafana/k6#868 and in some versions still skips the summary.
// verify_keys_checked guards the Rate: a threshold on a Rate with no samples passes (grafana/k6#4283), so a
// teardown that never got to record would otherwise look like success; a Counter with no samples counts 0.
const verifyOk = new Rate("verify_ok");
const keysChecked = new Counter("verify_keys_checked");

/** @type {import("k6/options").Options} */
export const options = verifyRunOptions({
  vus: VUS,
  iterations: ITERATIONS,
  keys: KEYS,
  persistTimeout: PERSIST_TIMEOUT,
  // One per 202.
  acceptedMetric: "tally_increments_accepted",
  accepted: VUS * ITERATIONS,
});

/**
 * The key (by index) and value that iteration `iter` of VU `vu` sends. Values run from −5 to 17, so keys
 * also see decrements and zeros, which tally accepts and must not store as changes.
 * @param {number} vu
 * @param {number} iter
 * @returns {{ keyIndex: number, value: number }}
 */
function planned(vu, iter) {
  return { keyIndex: (vu * 7 + iter) % KEYS, value: ((vu * 31 + iter * 17) % 23) - 5 };
}

/** @returns {number[]} per key index, the sum of every planned value */
function expectedSums() {
  /** @type {number[]} */
  const sums = [];
  for (let k = 0; k < KEYS; k++) sums.push(0);
  // k6 numbers its VUs from 1, and a single scenario with `vus: VUS` gets exactly 1..VUS.
  for (let vu = 1; vu <= VUS; vu++) {
    for (let iter = 0; iter < ITERATIONS; iter++) {
      const { keyIndex, value } = planned(vu, iter);
      sums[keyIndex] = /** @type {number} */ (sums[keyIndex]) + value;
    }
  }
  return sums;
}

/** @typedef {{ runId: string, tokens: string[] }} VerifyData */

/**
 * @param {string} runId
 * @param {number} keyIndex
 */
function keyName(runId, keyIndex) {
  return `k6:verify:${runId}:${keyIndex}`;
}

/** @returns {VerifyData} */
export function setup() {
  const runId = newRunId();
  // One client per VU keeps each under the per-client rate limit as far as possible (with TOKEN all VUs
  // share one client, and the 429 retries below absorb the limit).
  return { runId, tokens: clientTokens(`k6-verify-${runId}`, VUS, 0) };
}

/** @param {VerifyData} data */
export default function (data) {
  const { keyIndex, value } = planned(__VU, __ITER);
  const key = keyName(data.runId, keyIndex);
  const token = /** @type {string} */ (data.tokens[(__VU - 1) % data.tokens.length]);
  const res = retryWhileRateLimited(() => increment(key, value, token), MAX_RETRIES_429);
  if (!recordIncrement(res)) {
    console.error(`VU ${__VU} iteration ${__ITER}: increment of ${key} by ${value} answered ${res.status}`);
  }
}

/** @param {VerifyData} data */
export function teardown(data) {
  verifyTotals({
    keyName: (k) => keyName(data.runId, k),
    expected: expectedSums(),
    token: /** @type {string} */ (data.tokens[0]),
    persistTimeout: PERSIST_TIMEOUT,
    maxRetries429: MAX_RETRIES_429,
    verifyOk,
    keysChecked,
  });
}
