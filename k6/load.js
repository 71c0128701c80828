// Load: a constant arrival rate of increments over a pool of keys, the traffic tally is built for. Open model
// (constant-arrival-rate): requests keep arriving at RATE per second however slowly the service answers, so
// a slow service shows up as latency and dropped iterations instead of quietly lowering the load.
//   k6 run -e JWT_SECRET=… k6/load.js
//   k6 run -e JWT_SECRET=… -e RATE=5000 -e DURATION=5m -e MAX_VUS=2000 k6/load.js
import {
  clientsFor,
  clientTokens,
  envDuration,
  envInt,
  envNumber,
  envString,
  increment,
  pick,
  randomInt,
  recordIncrement,
} from "./lib.js";

const RATE = envInt("RATE", 2000);
const DURATION = envDuration("DURATION", "1m");
// Enough VUs for requests taking ~50 ms at RATE; k6 adds more up to MAX_VUS if the service is slower.
const PRE_ALLOCATED_VUS = envInt("PRE_ALLOCATED_VUS", Math.max(10, Math.ceil(RATE / 20)));
const MAX_VUS = envInt("MAX_VUS", Math.max(PRE_ALLOCATED_VUS, Math.ceil(RATE / 2)));
const KEYS = Math.max(1, envInt("KEYS", 10000));
// No run id by default: repeated runs hit the same rows, as production traffic does.
const KEY_PREFIX = envString("KEY_PREFIX", "k6:load");
const P95_MS = envNumber("P95_MS", 50);
const P99_MS = envNumber("P99_MS", 200);
// Share of the offered rate that must end up accepted: below it the service (or the load generator, see
// dropped_iterations) did not keep up.
const MIN_ACCEPTED_RATIO = envNumber("MIN_ACCEPTED_RATIO", 0.95);

/** @type {import("k6/options").Options} */
export const options = {
  scenarios: {
    load: {
      executor: "constant-arrival-rate",
      rate: RATE,
      timeUnit: "1s",
      duration: DURATION.text,
      preAllocatedVUs: PRE_ALLOCATED_VUS,
      maxVUs: MAX_VUS,
      gracefulStop: "10s",
    },
  },
  thresholds: {
    http_req_failed: ["rate<0.001"],
    "http_req_duration{name:increment}": [`p(95)<${P95_MS}`, `p(99)<${P99_MS}`],
    checks: ["rate>0.999"],
    tally_server_errors: ["rate<0.001"],
    // A Counter's rate is per second of the whole run, so this is the achieved throughput.
    tally_increments_accepted: [`rate>=${RATE * MIN_ACCEPTED_RATIO}`],
    // Iterations k6 could not start because every VU was busy waiting on the service.
    dropped_iterations: [`count<=${Math.ceil(RATE * DURATION.seconds * 0.001)}`],
  },
};

/** @typedef {{ tokens: string[] }} LoadData */

/** @returns {LoadData} */
export function setup() {
  return { tokens: clientTokens("k6-load", clientsFor(RATE), RATE) };
}

/** @param {LoadData} data */
export default function (data) {
  recordIncrement(increment(`${KEY_PREFIX}:${randomInt(KEYS)}`, 1, pick(data.tokens)));
}
