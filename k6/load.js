// Load: a constant arrival rate of increments over a pool of keys, the traffic tally is built for. Open model
// (constant-arrival-rate): requests keep arriving at RATE per second however slowly the service answers, so
// a slow service shows up as latency instead of quietly lowering the load. Iterations k6 could not start
// (dropped_iterations) are in the summary, not a threshold: on a shared machine they measure k6 as well.
//   k6 run -e JWT_SECRET=… k6/load.js
//   k6 run -e JWT_SECRET=… -e RATE=5000 -e DURATION=5m -e MAX_VUS=2000 k6/load.js
import {
  clientsFor,
  clientTokens,
  constantRateThresholds,
  envDuration,
  envInt,
  increment,
  pick,
  randomKeyFrom,
  recordIncrement,
  vuBudget,
} from "./lib.js";

const RATE = envInt("RATE", 2000);
const DURATION = envDuration("DURATION", "1m");
const randomKey = randomKeyFrom("k6:load");
// Its fields named one by one below, fields, not object spread: k6 before v0.53 compiles scripts with Babel 6, which has none.
const VUS = vuBudget(RATE, Math.ceil(RATE / 2));

/** @type {import("k6/options").Options} */
export const options = {
  scenarios: {
    load: {
      executor: "constant-arrival-rate",
      rate: RATE,
      timeUnit: "1s",
      duration: DURATION.text,
      preAllocatedVUs: VUS.preAllocatedVUs,
      maxVUs: VUS.maxVUs,
      gracefulStop: "10s",
    },
  },
  thresholds: constantRateThresholds(),
};

/** @typedef {{ tokens: string[] }} LoadData */

/** @returns {LoadData} */
export function setup() {
  return { tokens: clientTokens("k6-load", clientsFor(RATE), RATE) };
}

/** @param {LoadData} data */
export default function (data) {
  recordIncrement(increment(randomKey(), 1, pick(data.tokens)));
}
