// Stress: raise the arrival rate step by step until tally breaks, and stop there. Each level's failure-rate
// and p99 thresholds abort the run (abortOnFail) as soon as one is crossed,
// so a run that exits 99 has found the breaking point, and one that exits 0 never broke up to MAX_RATE.
//   k6 run -e JWT_SECRET=… k6/stress.js
//   k6 run -e JWT_SECRET=… -e START_RATE=2000 -e STEP_RATE=1000 -e MAX_RATE=30000 -e MAX_VUS=10000 k6/stress.js
import { Trend } from "k6/metrics";
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

const START_RATE = Math.max(1, envInt("START_RATE", 500));
const STEP_RATE = Math.max(1, envInt("STEP_RATE", 500));
const MAX_RATE = Math.max(START_RATE, envInt("MAX_RATE", 10000));
const STEP_RAMP = envDuration("STEP_RAMP", "10s");
const STEP_HOLD = envDuration("STEP_HOLD", "30s");
const randomKey = randomKeyFrom("k6:stress");
const P99_MS = envNumber("P99_MS", 500);
const MAX_FAILURE_RATE = envNumber("MAX_FAILURE_RATE", 0.01);
// No abort in the first seconds, while k6 starts VUs and opens connections and a few slow requests weigh a lot.
const ABORT_GRACE = envDuration("ABORT_GRACE", "20s").text;

// START_RATE, START_RATE + STEP_RATE, … up to MAX_RATE: each level is ramped to, then held.
/** @type {import("./lib.js").RateStage[]} */
const PLAN = [];
for (let level = START_RATE; level <= MAX_RATE; level += STEP_RATE) {
  if (level > START_RATE) PLAN.push({ seconds: STEP_RAMP.seconds, target: level, phase: String(level) });
  PLAN.push({ seconds: STEP_HOLD.seconds, target: level, phase: String(level) });
}

// Generous: when the service slows down, VUs pile up waiting on it; what k6 could not start for want of them
// is dropped_iterations in the summary.
// Its fields named one by one below, not object spread: k6 before v0.53 compiles scripts with Babel 6.
const VUS = vuBudget(START_RATE, Math.ceil(MAX_RATE / 10));

// The arrival rate k6 was aiming at when an increment was accepted. Its max is the rate reached when the run
// stopped, an upper bound of the breaking point (thresholds are checked every 2 s); the failed level's
// thresholds in the summary say which level broke. Recorded per request because k6 reports no per-second
// achieved rate of its own.
const offeredRate = new Trend("tally_stress_offered_rate");

// Per level, not over the whole run: a cumulative p99 only moves once 1% of every request so far is slow,
// which at the tenth level is minutes after the level that broke. k6 skips a threshold whose submetric has
// no samples yet while the test runs, so the levels not reached stay quiet (and pass at the end, empty).
/** @type {Record<string, import("k6/options").Threshold[]>} */
const perLevelThresholds = {};
for (const stage of PLAN) {
  const abort = { abortOnFail: true, delayAbortEval: ABORT_GRACE };
  perLevelThresholds[`http_req_duration{name:increment,level:${stage.phase}}`] = [
    Object.assign({ threshold: `p(99)<${P99_MS}` }, abort),
  ];
  perLevelThresholds[`http_req_failed{name:increment,level:${stage.phase}}`] = [
    Object.assign({ threshold: `rate<${MAX_FAILURE_RATE}` }, abort),
  ];
}

/** @type {import("k6/options").Options} */
export const options = {
  scenarios: {
    stress: {
      executor: "ramping-arrival-rate",
      startRate: START_RATE,
      timeUnit: "1s",
      stages: toK6Stages(PLAN),
      preAllocatedVUs: VUS.preAllocatedVUs,
      maxVUs: VUS.maxVUs,
      gracefulStop: "10s",
    },
  },
  thresholds: Object.assign(
    {
      // Iterations k6 could not start (dropped_iterations) are in the summary, not an abort: on a machine that
      // k6 shares with the service they are k6 running out of CPU as often as the service slowing down. The
      // breaking point is the first level whose latency or failures cross their bounds.
      // Not aborting: it only makes sure the run did something before any of the others fired.
      tally_increments_accepted: ["count>0"],
    },
    perLevelThresholds,
  ),
  // p(99) is what the aborts watch; max of tally_stress_offered_rate is the level reached.
  summaryTrendStats: ["min", "med", "p(95)", "p(99)", "max"],
};

/** @typedef {{ tokens: string[], startedAt: number }} StressData */

/** @returns {StressData} */
export function setup() {
  return { tokens: clientTokens("k6-stress", clientsFor(MAX_RATE), MAX_RATE), startedAt: Date.now() };
}

/** @param {StressData} data */
export default function (data) {
  const { stage, rate } = positionInPlan(START_RATE, PLAN, (Date.now() - data.startedAt) / 1000);
  // The level tag lets an output (JSON, Prometheus) split every request metric per step.
  const tags = { level: stage.phase };
  if (recordIncrement(increment(randomKey(), 1, pick(data.tokens), tags), tags)) {
    offeredRate.add(rate, tags);
  }
}
