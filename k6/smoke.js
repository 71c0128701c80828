// Smoke: one client, a handful of increments and reads, to see that a deployment answers correctly before
// pointing real load at it. Every request must succeed and every check must pass.
//   k6 run -e TOKEN=$(npm run -s token -- --sub k6) k6/smoke.js
import { check } from "k6";
import http from "k6/http";
import { Counter } from "k6/metrics";
import {
  BASE_URL,
  clientTokens,
  envInt,
  increment,
  newRunId,
  parseCounterBody,
  readCounter,
  recordIncrement,
} from "./lib.js";

const ITERATIONS = envInt("ITERATIONS", 10);

// Counts iterations that ran to their end: an exception halfway through an iteration does not fail a k6 run
// by itself, and would leave the checks it skipped out of the `checks` rate.
const completed = new Counter("smoke_iterations_completed");

// For the two deliberate errors below: the expected status counts as a success, so http_req_failed must
// still be 0. Made once, as k6 recommends, not per request.
const EXPECT_401 = http.expectedStatuses(401);
const EXPECT_404 = http.expectedStatuses(404);

/** @type {import("k6/options").Options} */
export const options = {
  scenarios: {
    smoke: { executor: "per-vu-iterations", vus: 1, iterations: ITERATIONS, maxDuration: "1m" },
  },
  thresholds: {
    http_req_failed: ["rate==0"],
    checks: ["rate==1"],
    smoke_iterations_completed: [`count==${ITERATIONS}`],
  },
};

/** @typedef {{ token: string, key: string }} SmokeData */

/** @returns {SmokeData} */
export function setup() {
  const [token] = clientTokens("k6-smoke", 1, 1);
  // A key of this run's own, so the totals below start from zero.
  return { token: /** @type {string} */ (token), key: `k6:smoke:${newRunId()}` };
}

/** @param {SmokeData} data */
export default function (data) {
  recordIncrement(increment(data.key, 1, data.token));

  const read = readCounter(data.key, data.token);
  const reading = parseCounterBody(read.body);
  // One VU, one increment per iteration, a key nobody else writes: after iteration i the total is i + 1,
  // whether the syncer has moved it to Postgres yet or not.
  check(read, {
    "counter readable (200)": (r) => r.status === 200,
    "total counts every accepted increment": () => reading !== null && reading.total === String(__ITER + 1),
    "total = persisted + pending": () =>
      reading !== null && Number(reading.persisted) + Number(reading.pending) === Number(reading.total),
  });

  if (__ITER === 0) {
    // The error paths, once per run.
    const anonymous = http.post(`${BASE_URL}/increment`, JSON.stringify({ key: data.key, value: 1 }), {
      headers: { "Content-Type": "application/json" },
      tags: { name: "increment_without_token" },
      responseCallback: EXPECT_401,
    });
    check(anonymous, {
      "no token: 401 problem+json": (r) => r.status === 401 && isProblem(r.headers),
    });
    const unknown = http.get(`${BASE_URL}/counters/${encodeURIComponent(`${data.key}:never-counted`)}`, {
      headers: { Authorization: `Bearer ${data.token}` },
      tags: { name: "read_unknown_counter" },
      responseCallback: EXPECT_404,
    });
    check(unknown, {
      "unknown key: 404 problem+json": (r) => r.status === 404 && isProblem(r.headers),
    });
  }

  completed.add(1);
}

/**
 * @param {Record<string, string>} headers
 * @returns {boolean}
 */
function isProblem(headers) {
  return String(headers["Content-Type"]).indexOf("application/problem+json") === 0;
}
