// Batches: POST /increments, the way clients with volume send. Two modes.
// - Load (default): a constant arrival rate of batches of BATCH_SIZE increments over a pool of keys (each VU
//   sends 16 bodies of random keys, made once, in turn), with thresholds on failures, latency and the
//   increments accepted per second.
//     k6 run -e JWT_SECRET=… k6/batch.js
//     k6 run -e JWT_SECRET=… -e RATE=200 -e BATCH_SIZE=1000 -e DURATION=2m k6/batch.js
// - Verify (VERIFY=true): per-vu-iterations with a deterministic plan, each batch sent with an
//   Idempotency-Key and retried with it (429, 503, a lost connection) until accepted; teardown checks that
//   every key's total, at once, and persisted total, soon after, are the plan's sums: a retried batch
//   counts once.
//     k6 run -e JWT_SECRET=… -e VERIFY=true -e VUS=10 -e ITERATIONS=50 k6/batch.js
import { check, sleep } from "k6";
import exec from "k6/execution";
import http from "k6/http";
import { Counter, Rate } from "k6/metrics";
import {
  BASE_URL,
  clientsFor,
  clientTokens,
  envDuration,
  envInt,
  envNumber,
  envString,
  newRunId,
  randomKeyFrom,
  serverErrors,
  tokenFor,
  verifyRunOptions,
  verifyTotals,
  vuBudget,
} from "./lib.js";

const VERIFY = envString("VERIFY", "false") === "true";
const BATCH_SIZE = Math.max(1, envInt("BATCH_SIZE", 100));
const RATE = envInt("RATE", 50);
const DURATION = envDuration("DURATION", "1m");
const VUS = Math.max(1, envInt("VUS", 10));
const ITERATIONS = Math.max(1, envInt("ITERATIONS", 50));
const KEYS = Math.max(1, envInt("KEYS", 8));
const PERSIST_TIMEOUT = envDuration("PERSIST_TIMEOUT", "15s");
const MAX_RETRIES = envInt("MAX_RETRIES", 20);
const randomKey = randomKeyFrom("k6:batch");
// Its fields named one by one below, not object spread: k6 before v0.53 compiles scripts with Babel 6.
const BATCH_VUS = vuBudget(RATE, Math.ceil(RATE / 2));

const batchesAccepted = new Counter("tally_batches_accepted");
const batchIncrementsAccepted = new Counter("tally_batch_increments_accepted");
const verifyOk = new Rate("verify_ok");
const keysChecked = new Counter("verify_keys_checked");

/** @type {import("k6/options").Options} */
export const options = VERIFY
  ? verifyRunOptions({
      vus: VUS,
      iterations: ITERATIONS,
      keys: KEYS,
      persistTimeout: PERSIST_TIMEOUT,
      acceptedMetric: "tally_batches_accepted",
      accepted: VUS * ITERATIONS,
    })
  : {
      scenarios: {
        batches: {
          executor: "constant-arrival-rate",
          rate: RATE,
          timeUnit: "1s",
          duration: DURATION.text,
          preAllocatedVUs: BATCH_VUS.preAllocatedVUs,
          maxVUs: BATCH_VUS.maxVUs,
          gracefulStop: "10s",
        },
      },
      thresholds: {
        http_req_failed: ["rate<0.001"],
        "http_req_duration{name:increments}": [
          `p(95)<${envNumber("P95_MS", 200)}`,
          `p(99)<${envNumber("P99_MS", 500)}`,
        ],
        checks: ["rate>0.999"],
        tally_server_errors: ["rate<0.001"],
        // The rate achieved is in the summary: on a machine shared with the service it measures k6 too.
        tally_batch_increments_accepted: ["count>0"],
      },
    };

/** @typedef {{ runId: string, tokens: string[] }} BatchData */

/** @returns {BatchData} */
export function setup() {
  const runId = newRunId();
  // A batch spends one point per increment: clients enough to stay under each one's quota.
  return {
    runId,
    tokens: clientTokens(`k6-batch-${runId}`, VERIFY ? VUS : clientsFor(RATE * BATCH_SIZE), 0),
  };
}

/**
 * POST /increments.
 * @param {{ key: string, value: number }[] | string} increments the increments, or a body already made
 * @param {string} token
 * @param {string} [idempotencyKey]
 */
function postBatch(increments, token, idempotencyKey) {
  /** @type {Record<string, string>} */
  const headers = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
  if (idempotencyKey !== undefined) headers["Idempotency-Key"] = idempotencyKey;
  const body = typeof increments === "string" ? increments : JSON.stringify({ increments });
  return http.post(`${BASE_URL}/increments`, body, { headers, tags: { name: "increments" } });
}

// Load mode sends bodies of random keys made once per VU and taken in turn: building BATCH_SIZE keys in
// JavaScript for every request made k6, not the service, the limit of a fast run.
const LOAD_BODIES = 16;
/** @type {string[]} */
const loadBodies = [];

/** The body of a load-mode batch: one of LOAD_BODIES, each made on first use. */
function loadBody() {
  const index = exec.vu.iterationInScenario % LOAD_BODIES;
  let body = loadBodies[index];
  if (body === undefined) {
    /** @type {{ key: string, value: number }[]} */
    const increments = [];
    for (let i = 0; i < BATCH_SIZE; i++) increments.push({ key: randomKey(), value: 1 });
    body = JSON.stringify({ increments });
    loadBodies[index] = body;
  }
  return body;
}

/**
 * @param {{ status: number }} res
 * @param {number} size
 */
function recordBatch(res, size) {
  const accepted = res.status === 202;
  check(res, { "batch accepted (202)": () => accepted });
  batchesAccepted.add(accepted ? 1 : 0);
  batchIncrementsAccepted.add(accepted ? size : 0);
  serverErrors.add(res.status === 0 || res.status >= 500);
  return accepted;
}

/**
 * The increments batch `iter` of VU `vu` sends in verify mode, keys by index.
 * @param {number} vu
 * @param {number} iter
 */
function plannedBatch(vu, iter) {
  /** @type {{ keyIndex: number, value: number }[]} */
  const batch = [];
  for (let i = 0; i < BATCH_SIZE; i++) {
    batch.push({ keyIndex: (vu * 7 + iter * 3 + i) % KEYS, value: ((vu * 31 + iter * 17 + i * 5) % 23) - 5 });
  }
  return batch;
}

/**
 * @param {string} runId
 * @param {number} keyIndex
 */
function keyName(runId, keyIndex) {
  return `k6:batch:${runId}:${keyIndex}`;
}

/** @param {BatchData} data */
export default function (data) {
  if (!VERIFY) {
    recordBatch(postBatch(loadBody(), tokenFor(data.tokens, exec.scenario.iterationInTest)), BATCH_SIZE);
    return;
  }
  const increments = plannedBatch(__VU, __ITER).map(({ keyIndex, value }) => ({
    key: keyName(data.runId, keyIndex),
    value,
  }));
  const token = /** @type {string} */ (data.tokens[(__VU - 1) % data.tokens.length]);
  // The same key and body on every attempt: a batch partly applied before a failure is completed, not doubled.
  const idempotencyKey = `${data.runId}:${__VU}:${__ITER}`;
  let res = postBatch(increments, token, idempotencyKey);
  for (
    let retry = 0;
    res.status !== 202 &&
    (res.status === 429 || res.status === 0 || res.status >= 500) &&
    retry < MAX_RETRIES;
    retry++
  ) {
    sleep(Math.min(Math.max(Number(res.headers["Retry-After"]) || 1, 0.1), 5));
    res = postBatch(increments, token, idempotencyKey);
  }
  if (!recordBatch(res, increments.length)) {
    console.error(`VU ${__VU} iteration ${__ITER}: batch answered ${res.status}`);
  }
}

/** @param {BatchData} data */
export function teardown(data) {
  if (!VERIFY) return;
  /** @type {number[]} */
  const expected = [];
  for (let k = 0; k < KEYS; k++) expected.push(0);
  for (let vu = 1; vu <= VUS; vu++) {
    for (let iter = 0; iter < ITERATIONS; iter++) {
      for (const { keyIndex, value } of plannedBatch(vu, iter)) {
        expected[keyIndex] = /** @type {number} */ (expected[keyIndex]) + value;
      }
    }
  }
  verifyTotals({
    keyName: (k) => keyName(data.runId, k),
    expected,
    token: /** @type {string} */ (data.tokens[0]),
    persistTimeout: PERSIST_TIMEOUT,
    maxRetries429: MAX_RETRIES,
    verifyOk,
    keysChecked,
  });
}
