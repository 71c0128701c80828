// Spike: a steady base rate, a sudden jump to SPIKE_FACTOR times that, and back, to see that tally absorbs a
// burst without server errors and recovers its latency once the burst is over. Success means 202 and nothing
// else; a 429 (a client over its quota) is counted as a failed request like any other non-202.
//   k6 run -e JWT_SECRET=… k6/spike.js
//   k6 run -e JWT_SECRET=… -e BASE_RATE=500 -e SPIKE_FACTOR=20 -e MAX_VUS=5000 k6/spike.js
import {
  clientsFor,
  clientTokens,
  envDuration,
  envInt,
  envNumber,
  increment,
  pick,
  positionInPlan,
  randomKeyFrom,
  recordIncrement,
  toK6Stages,
  vuBudget,
} from "./lib.js";

const BASE_RATE = Math.max(1, envInt("BASE_RATE", 200));
const SPIKE_RATE = Math.round(BASE_RATE * envNumber("SPIKE_FACTOR", 10));
const randomKey = randomKeyFrom("k6:spike");
// Its fields named one by one below, not object spread: k6 before v0.53 compiles scripts with Babel 6.
const VUS = vuBudget(SPIKE_RATE, Math.ceil(SPIKE_RATE / 2));
const P99_MS = envNumber("P99_MS", 500);
// After the burst the service should be back to its normal latency.
const RECOVERY_P99_MS = envNumber("RECOVERY_P99_MS", 200);
const MAX_SERVER_ERROR_RATE = envNumber("MAX_SERVER_ERROR_RATE", 0.001);

/** @type {import("./lib.js").RateStage[]} */
const PLAN = [
  { seconds: envDuration("WARMUP", "30s").seconds, target: BASE_RATE, phase: "base" },
  // The jump itself: a few seconds, not an instant step, so k6 can start VUs as fast as it must.
  { seconds: envDuration("SPIKE_RAMP", "5s").seconds, target: SPIKE_RATE, phase: "spike" },
  { seconds: envDuration("SPIKE_HOLD", "1m").seconds, target: SPIKE_RATE, phase: "spike" },
  { seconds: envDuration("SPIKE_RAMP", "5s").seconds, target: BASE_RATE, phase: "spike" },
  { seconds: envDuration("RECOVERY", "1m").seconds, target: BASE_RATE, phase: "recovery" },
];

/** @type {import("k6/options").Options} */
export const options = {
  scenarios: {
    spike: {
      executor: "ramping-arrival-rate",
      startRate: BASE_RATE,
      timeUnit: "1s",
      stages: toK6Stages(PLAN),
      preAllocatedVUs: VUS.preAllocatedVUs,
      maxVUs: VUS.maxVUs,
      gracefulStop: "10s",
    },
  },
  thresholds: {
    // 5xx and transport errors: a burst may slow tally down but should not make it fail requests.
    tally_server_errors: [`rate<=${MAX_SERVER_ERROR_RATE}`],
    // Everything but 202 counts here, 429s included.
    http_req_failed: ["rate<0.01"],
    checks: ["rate>0.99"],
    "http_req_duration{name:increment}": [`p(99)<${P99_MS}`],
    "http_req_duration{name:increment,phase:recovery}": [`p(99)<${RECOVERY_P99_MS}`],
    tally_increments_accepted: ["count>0"],
  },
};

/** @typedef {{ tokens: string[], startedAt: number }} SpikeData */

/** @returns {SpikeData} */
export function setup() {
  const tokens = clientTokens("k6-spike", clientsFor(SPIKE_RATE), SPIKE_RATE);
  // The scenario starts right after setup() returns; iterations measure their phase from here.
  return { tokens, startedAt: Date.now() };
}

/** @param {SpikeData} data */
export default function (data) {
  const { stage } = positionInPlan(BASE_RATE, PLAN, (Date.now() - data.startedAt) / 1000);
  const tags = { phase: stage.phase };
  recordIncrement(increment(randomKey(), 1, pick(data.tokens), tags), tags);
}
