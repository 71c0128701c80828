// Reads beside writes: the dashboard case. Three scenarios at constant arrival rates over one pool of keys:
// single increments, multi-reads (POST /read of READ_KEYS keys) and listing pages (GET /counters under a
// prefix of the pool), with thresholds on failures and on each operation's latency. Every read checks what it
// can check under concurrent writes: one reading per key asked, in order, each total = persisted + pending;
// every page in key order, within the prefix.
//   k6 run -e JWT_SECRET=… k6/mixed.js
//   k6 run -e JWT_SECRET=… -e WRITE_RATE=500 -e READ_RATE=20 -e LIST_RATE=10 -e DURATION=1m k6/mixed.js
import { check } from "k6";
import http from "k6/http";
import { Counter } from "k6/metrics";
import {
  BASE_URL,
  clientsFor,
  clientTokens,
  envDuration,
  envInt,
  envNumber,
  increment,
  newRunId,
  pick,
  randomInt,
  recordIncrement,
  serverErrors,
  vuBudget,
} from "./lib.js";

const WRITE_RATE = envInt("WRITE_RATE", 200);
const READ_RATE = envInt("READ_RATE", 10);
const LIST_RATE = envInt("LIST_RATE", 5);
const READ_KEYS = Math.min(1000, Math.max(1, envInt("READ_KEYS", 100)));
const KEYS = Math.max(READ_KEYS, envInt("KEYS", 1000));
const PAGE_SIZE = Math.min(1000, Math.max(1, envInt("PAGE_SIZE", 100)));
const DURATION = envDuration("DURATION", "30s");
const TOTAL_RATE = WRITE_RATE + READ_RATE * READ_KEYS + LIST_RATE * PAGE_SIZE;
const WRITE_VUS = vuBudget(WRITE_RATE, Math.ceil(WRITE_RATE / 2));
const READ_VUS = vuBudget(READ_RATE, Math.max(10, READ_RATE * 2));
const LIST_VUS = vuBudget(LIST_RATE, Math.max(10, LIST_RATE * 2));

const countersRead = new Counter("tally_counters_read");
const pagesListed = new Counter("tally_pages_listed");

/**
 * @param {string} exec
 * @param {number} rate
 * @param {{ preAllocatedVUs: number, maxVUs: number }} vus
 * @returns {import("k6/options").Scenario}
 */
function scenario(exec, rate, vus) {
  return {
    executor: /** @type {"constant-arrival-rate"} */ ("constant-arrival-rate"),
    exec,
    rate,
    timeUnit: "1s",
    duration: DURATION.text,
    preAllocatedVUs: vus.preAllocatedVUs,
    maxVUs: vus.maxVUs,
    gracefulStop: "10s",
  };
}

/** @type {import("k6/options").Options} */
export const options = {
  scenarios: {
    writes: scenario("writes", WRITE_RATE, WRITE_VUS),
    reads: scenario("reads", READ_RATE, READ_VUS),
    listings: scenario("listings", LIST_RATE, LIST_VUS),
  },
  thresholds: {
    http_req_failed: ["rate<0.001"],
    checks: ["rate>0.999"],
    tally_server_errors: ["rate<0.001"],
    "http_req_duration{name:increment}": [`p(95)<${envNumber("P95_MS", 200)}`],
    "http_req_duration{name:read_many}": [`p(95)<${envNumber("READ_P95_MS", 500)}`],
    "http_req_duration{name:list_counters}": [`p(95)<${envNumber("LIST_P95_MS", 500)}`],
    // Each kind of request went through at least once; the rates achieved are in the summary (they measure
    // k6 too when it shares the cores with the service).
    tally_increments_accepted: ["count>0"],
    tally_counters_read: ["count>0"],
    tally_pages_listed: ["count>0"],
  },
};

/** @typedef {{ tokens: string[], prefix: string }} MixedData */

/** @returns {MixedData} */
export function setup() {
  // Each multi-read and page spends a point per key: clients enough for every point asked per second.
  return {
    tokens: clientTokens("k6-mixed", clientsFor(TOTAL_RATE), TOTAL_RATE),
    prefix: `k6:mixed:${newRunId()}:`,
  };
}

/**
 * @param {MixedData} data
 * @param {number} i
 */
function keyOf(data, i) {
  return `${data.prefix}${String(i).padStart(6, "0")}`;
}

/** @param {MixedData} data */
export function writes(data) {
  recordIncrement(increment(keyOf(data, randomInt(KEYS)), 1 + randomInt(10), pick(data.tokens)));
}

/** @param {MixedData} data */
export function reads(data) {
  const first = randomInt(KEYS - READ_KEYS + 1);
  /** @type {string[]} */
  const keys = [];
  for (let i = 0; i < READ_KEYS; i++) keys.push(keyOf(data, first + i));
  const res = http.post(`${BASE_URL}/read`, JSON.stringify({ keys }), {
    headers: { Authorization: `Bearer ${pick(data.tokens)}`, "Content-Type": "application/json" },
    tags: { name: "read_many" },
  });
  serverErrors.add(res.status === 0 || res.status >= 500);
  const counters = countersOf(res.body) || [];
  const ok = check(res, {
    "read many: 200": (r) => r.status === 200,
    "read many: one reading per key, in order": () =>
      counters.length === keys.length && counters.every((c, i) => c.key === keys[i]),
    "read many: total = persisted + pending": () =>
      counters.every((c) => c.persisted + c.pending === c.total),
  });
  if (ok) countersRead.add(keys.length);
}

/** @param {MixedData} data */
export function listings(data) {
  // A prefix that names a hundredth of the pool, so that pages hold keys both in Redis and in Postgres.
  const prefix = keyOf(data, randomInt(KEYS)).slice(0, data.prefix.length + 4);
  const res = http.get(`${BASE_URL}/counters?prefix=${encodeURIComponent(prefix)}&limit=${PAGE_SIZE}`, {
    headers: { Authorization: `Bearer ${pick(data.tokens)}` },
    tags: { name: "list_counters" },
  });
  serverErrors.add(res.status === 0 || res.status >= 500);
  const counters = countersOf(res.body);
  const ok = check(res, {
    "list: 200": (r) => r.status === 200,
    "list: in key order, within the prefix": () => counters !== null && inKeyOrderUnder(prefix, counters),
  });
  if (ok) pagesListed.add(1);
}

/**
 * True when every key starts with `prefix` and comes after the one before it. The keys here are ASCII, where
 * JavaScript's order is the service's (code points).
 * @param {string} prefix
 * @param {{ key: string }[]} counters
 * @returns {boolean}
 */
function inKeyOrderUnder(prefix, counters) {
  let previous = "";
  for (const { key } of counters) {
    if (key.indexOf(prefix) !== 0 || key <= previous) return false;
    previous = key;
  }
  return true;
}

/**
 * The readings of a POST /read or GET /counters body, or null when it is not one. The keys here are ASCII
 * and the totals small, so JSON.parse is exact for them.
 * @param {unknown} body
 * @returns {{ key: string, persisted: number, pending: number, total: number }[] | null}
 */
function countersOf(body) {
  if (typeof body !== "string") return null;
  try {
    const parsed = JSON.parse(body);
    return Array.isArray(parsed.counters) ? parsed.counters : null;
  } catch (_) {
    return null;
  }
}
