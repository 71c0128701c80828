// Soak: a moderate constant rate for a long time, to catch what short runs cannot: memory or connection
// leaks, latency creeping up, and the syncer falling behind. A second scenario reads a counter once a second
// and records how far Postgres lags behind (now − persistedAsOf), which the SPEC bounds at 10 s.
//   k6 run -e JWT_SECRET=… k6/soak.js
//   k6 run -e JWT_SECRET=… -e RATE=1000 -e DURATION=2h k6/soak.js
import { check } from "k6";
import { Trend } from "k6/metrics";
import {
  clientsFor,
  clientTokens,
  constantRateThresholds,
  envDuration,
  envInt,
  envNumber,
  envString,
  increment,
  newRunId,
  parseCounterBody,
  pick,
  randomKeyFrom,
  readCounter,
  recordIncrement,
  vuBudget,
} from "./lib.js";

const RATE = envInt("RATE", 500);
const DURATION = envDuration("DURATION", "30m");
const KEY_PREFIX = envString("KEY_PREFIX", "k6:soak");
const randomKey = randomKeyFrom("k6:soak");
// Its fields named one by one below, not object spread: k6 before v0.53 compiles scripts with Babel 6.
const VUS = vuBudget(RATE, Math.ceil(RATE / 2));
// The SPEC's bound. It compares this machine's clock with the service's: on another host, allow for skew.
const STALENESS_MAX_MS = envNumber("STALENESS_MAX_MS", 10000);

// isTime, so the summary prints it in milliseconds like http_req_duration.
const staleness = new Trend("tally_sync_staleness_ms", true);

/** @type {import("k6/options").Options} */
export const options = {
  scenarios: {
    soak: {
      executor: "constant-arrival-rate",
      rate: RATE,
      timeUnit: "1s",
      duration: DURATION.text,
      preAllocatedVUs: VUS.preAllocatedVUs,
      maxVUs: VUS.maxVUs,
      gracefulStop: "10s",
    },
    staleness: {
      executor: "constant-arrival-rate",
      exec: "probeStaleness",
      rate: 1,
      timeUnit: "1s",
      duration: DURATION.text,
      preAllocatedVUs: 2,
      maxVUs: 5,
      gracefulStop: "10s",
    },
  },
  // Object.assign, not object spread: k6 before v0.53 compiles scripts with Babel 6, which has none.
  thresholds: Object.assign(constantRateThresholds(), {
    tally_sync_staleness_ms: [`max<${STALENESS_MAX_MS}`],
  }),
};

/** @typedef {{ tokens: string[], probeKey: string, startedAt: number }} SoakData */

/** @returns {SoakData} */
export function setup() {
  const tokens = clientTokens("k6-soak", clientsFor(RATE), RATE);
  // The probe reads a key of its own, counted once here so that it exists (an unknown key is a 404).
  const probeKey = `${KEY_PREFIX}:${newRunId()}:staleness-probe`;
  recordIncrement(increment(probeKey, 1, /** @type {string} */ (tokens[0])));
  return { tokens, probeKey, startedAt: Date.now() };
}

/** @param {SoakData} data */
export default function (data) {
  recordIncrement(increment(randomKey(), 1, pick(data.tokens)));
}

/** @param {SoakData} data */
export function probeStaleness(data) {
  const res = readCounter(data.probeKey, /** @type {string} */ (data.tokens[0]), { probe: "staleness" });
  const reading = parseCounterBody(res.body);
  if (!check(res, { "staleness probe read (200)": (r) => r.status === 200 && reading !== null })) return;
  // persistedAsOf is per deployment, not per key: every increment accepted before it is in Postgres. Null
  // means no sync has completed since the service started, so the lag counts from the start of this run,
  // and a syncer that never runs fails the threshold instead of leaving the metric empty.
  const asOf =
    reading === null || reading.persistedAsOf === null ? Number.NaN : Date.parse(reading.persistedAsOf);
  const now = Date.now();
  staleness.add(Number.isNaN(asOf) ? now - data.startedAt : Math.max(0, now - asOf));
}
