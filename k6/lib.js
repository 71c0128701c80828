// Shared by every scenario in this directory: configuration from -e/environment variables, tokens, the two
// API calls and the metrics they feed. Plain ES modules with nothing but k6's own modules, so `k6 run` needs
// no build step; written for k6 v0.45 and later.
import { check, fail, sleep } from "k6";
import crypto from "k6/crypto";
import http from "k6/http";
import { Counter, Rate } from "k6/metrics";
import { assembleJwt, HS256_HEADER, tallyClaims } from "./jwt.js";

// ---------------------------------------------------------------------------------------------------------
// Configuration

/**
 * @param {string} name
 * @param {string} fallback
 * @returns {string}
 */
export function envString(name, fallback) {
  const raw = __ENV[name];
  return raw === undefined || raw === "" ? fallback : raw;
}

/**
 * A whole number from the environment. A typo fails in the init context, before any load is sent, rather
 * than turning into NaN in an executor option.
 * @param {string} name
 * @param {number} fallback
 * @returns {number}
 */
export function envInt(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 0)
    throw new Error(`${name} must be a whole number (got "${raw}")`);
  return value;
}

/**
 * @param {string} name
 * @param {number} fallback
 * @returns {number}
 */
export function envNumber(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0)
    throw new Error(`${name} must be a non-negative number (got "${raw}")`);
  return value;
}

/**
 * Seconds in a k6/Go duration such as "90s", "1m30s", "2h" or "500ms". The scripts need the number to build
 * stages and to know which phase of a ramp an iteration runs in, so they parse durations themselves.
 * @param {string} text
 * @returns {number}
 */
export function durationSeconds(text) {
  const units = /** @type {Record<string, number>} */ ({ ms: 0.001, s: 1, m: 60, h: 3600 });
  const part = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let seconds = 0;
  let consumed = 0;
  let match = part.exec(text);
  while (match !== null) {
    if (match.index !== consumed) break;
    seconds += Number(match[1]) * /** @type {number} */ (units[/** @type {string} */ (match[2])]);
    consumed += match[0].length;
    match = part.exec(text);
  }
  if (consumed === 0 || consumed !== text.length) {
    throw new Error(`"${text}" is not a duration like 90s, 1m30s, 2h or 500ms`);
  }
  return seconds;
}

/**
 * A duration from the environment, checked here so a bad value fails before the test starts.
 * @param {string} name
 * @param {string} fallback
 * @returns {{ text: string, seconds: number }}
 */
export function envDuration(name, fallback) {
  const text = envString(name, fallback);
  try {
    return { text, seconds: durationSeconds(text) };
  } catch (error) {
    throw new Error(`${name}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

// Loopback by default: nobody should load-test a remote deployment by forgetting a flag.
export const BASE_URL = envString("BASE_URL", "http://127.0.0.1:3333").replace(/\/+$/, "");
const TOKEN = envString("TOKEN", "");
const JWT_SECRET = envString("JWT_SECRET", "");
// Longer than any default run here (the soak is 30 minutes), so no token expires mid-test.
const TOKEN_TTL_S = envInt("TOKEN_TTL_S", 6 * 3600);

/** Every script writes and reads counters. */
export const SCOPES = Object.freeze(["counters:write", "counters:read"]);

// tally allows RATE_LIMIT_POINTS (1,000 by default) requests per second per client (the token's `sub`);
// half of that per client leaves room for the randomness in how requests spread over the clients.
const REQUESTS_PER_CLIENT_PER_S = 500;

// ---------------------------------------------------------------------------------------------------------
// Tokens

/**
 * An HS256 token tally accepts, signed in-script with k6/crypto: the signing input goes through HMAC-SHA256
 * and k6 returns the raw MAC already base64url-encoded without padding ("base64rawurl"), which is exactly
 * the JWS signature encoding, so no bytes have to be converted by hand.
 * @param {string} secret
 * @param {string} sub
 * @param {readonly string[]} scopes
 * @param {number} ttlSeconds
 * @returns {string}
 */
export function mintToken(secret, sub, scopes, ttlSeconds) {
  const claims = tallyClaims({
    subject: sub,
    scopes,
    ttlSeconds,
    nowSeconds: Math.floor(Date.now() / 1000),
    issuer: envString("JWT_ISSUER", "") || undefined,
    audience: envString("JWT_AUDIENCE", "") || undefined,
  });
  return assembleJwt(HS256_HEADER, claims, (signingInput) =>
    crypto.hmac("sha256", secret, signingInput, "base64rawurl"),
  );
}

/**
 * How many clients to spread `peakRate` requests per second over so none of them hits the rate limit;
 * CLIENTS overrides it.
 * @param {number} peakRate
 * @returns {number}
 */
export function clientsFor(peakRate) {
  return envInt("CLIENTS", Math.max(1, Math.ceil(peakRate / REQUESTS_PER_CLIENT_PER_S)));
}

/**
 * Tokens for `count` distinct clients (call it from setup()). With TOKEN there is one client whatever the
 * count, so a rate above the server's per-client limit gets 429s: raise RATE_LIMIT_POINTS or pass JWT_SECRET.
 * @param {string} subPrefix
 * @param {number} count
 * @param {number} peakRate requests per second the script will send at most, for the warning only
 * @returns {string[]}
 */
export function clientTokens(subPrefix, count, peakRate) {
  if (TOKEN) {
    if (peakRate > REQUESTS_PER_CLIENT_PER_S * 2) {
      console.warn(
        `one TOKEN means one client: ${peakRate} req/s exceeds tally's default limit of 1000 req/s per client; ` +
          "raise RATE_LIMIT_POINTS on the service or pass JWT_SECRET instead so the script mints several clients",
      );
    }
    return [TOKEN];
  }
  if (!JWT_SECRET) {
    fail("pass -e TOKEN=$(npm run -s token -- --sub k6) or -e JWT_SECRET=<the service's secret>");
  }
  /** @type {string[]} */
  const tokens = [];
  for (let i = 0; i < Math.max(1, count); i++) {
    tokens.push(mintToken(JWT_SECRET, `${subPrefix}-${i}`, SCOPES, TOKEN_TTL_S));
  }
  return tokens;
}

/**
 * Names this run's keys and clients, so two runs against the same service never share a counter.
 * @returns {string}
 */
export function newRunId() {
  return envString("RUN_ID", String(Date.now()));
}

// ---------------------------------------------------------------------------------------------------------
// API calls

/**
 * POST /increment. Every request carries the tag name=increment: k6 otherwise tags it with its URL, and the
 * thresholds below select this submetric by that tag.
 * @param {string} key
 * @param {number} value
 * @param {string} token
 * @param {Record<string, string>} [tags]
 */
export function increment(key, value, token, tags) {
  return http.post(`${BASE_URL}/increment`, JSON.stringify({ key, value }), {
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    tags: Object.assign({ name: "increment" }, tags),
  });
}

/**
 * Sends `request` again while tally answers 429, waiting as its Retry-After says (1 s when it says nothing,
 * at most 5 s), at most `maxRetries` times; returns the last response.
 * @param {() => import("k6/http").RefinedResponse<import("k6/http").ResponseType | undefined>} request
 * @param {number} maxRetries
 */
export function retryWhileRateLimited(request, maxRetries) {
  let res = request();
  for (let retry = 0; res.status === 429 && retry < maxRetries; retry++) {
    sleep(Math.min(Math.max(Number(res.headers["Retry-After"]) || 1, 0.1), 5));
    res = request();
  }
  return res;
}

/**
 * GET /counters/{key}. The fixed name tag keeps one time series for all keys instead of one per URL.
 * @param {string} key
 * @param {string} token
 * @param {Record<string, string>} [tags]
 */
export function readCounter(key, token, tags) {
  return http.get(`${BASE_URL}/counters/${encodeURIComponent(key)}`, {
    headers: { Authorization: `Bearer ${token}` },
    tags: Object.assign({ name: "read_counter" }, tags),
  });
}

/**
 * @typedef {object} CounterReading
 * @property {string} persisted exact decimal text of the JSON integer
 * @property {string} pending
 * @property {string} total
 * @property {string | null} persistedAsOf ISO timestamp, null before the first sync
 */

/**
 * The fields of a GET /counters/{key} body, with the integers as their exact decimal text: tally sends
 * 64-bit totals as plain JSON integers and JSON.parse would round those beyond 2^53. Matching the raw text
 * is safe because a quote inside the JSON string "key" is always escaped, so `"persisted":` cannot occur
 * there. Null when the body is not a counter.
 * @param {unknown} body
 * @returns {CounterReading | null}
 */
export function parseCounterBody(body) {
  if (typeof body !== "string") return null;
  const persisted = integerField(body, "persisted");
  const pending = integerField(body, "pending");
  const total = integerField(body, "total");
  if (persisted === null || pending === null || total === null) return null;
  return { persisted, pending, total, persistedAsOf: firstGroup(/"persistedAsOf":"([^"]*)"/.exec(body)) };
}

/**
 * @param {string} body
 * @param {string} name
 * @returns {string | null}
 */
function integerField(body, name) {
  return firstGroup(new RegExp(`"${name}":(-?\\d+)[,}]`).exec(body));
}

/**
 * @param {RegExpExecArray | null} match
 * @returns {string | null}
 */
function firstGroup(match) {
  const group = match === null ? undefined : match[1];
  return group === undefined ? null : group;
}

// ---------------------------------------------------------------------------------------------------------
// Metrics and outcomes

// Counters rather than Rates for the guards: k6 leaves a threshold on a Rate that got no samples unevaluated,
// so it passes (grafana/k6#4283), while a Counter with no samples counts 0 and fails a `count>0`-style bound.
export const incrementsAccepted = new Counter("tally_increments_accepted");
// 5xx and transport errors (status 0): the service's fault, unlike 4xx, which are the client's.
export const serverErrors = new Rate("tally_server_errors");

/**
 * Records one increment's outcome: a check (success means 202, nothing else), the accepted count and
 * whether the server failed.
 * @param {{ status: number }} res
 * @param {Record<string, string>} [tags]
 * @returns {boolean} whether it was accepted
 */
export function recordIncrement(res, tags) {
  const accepted = res.status === 202;
  check(res, { "increment accepted (202)": () => accepted }, tags);
  incrementsAccepted.add(accepted ? 1 : 0, tags);
  serverErrors.add(res.status === 0 || res.status >= 500, tags);
  return accepted;
}

// ---------------------------------------------------------------------------------------------------------
// Verification (verify.js, batch.js with VERIFY=true)

/**
 * A reading of the key, or null when it cannot be read. A key whose increments sum to 0 may have no row
 * and nothing pending (zero deltas are not stored), which tally answers with 404: that is a correct 0.
 * With one TOKEN the increments may just have spent the client's quota: a read waits for it like they did.
 * @param {string} key
 * @param {string} token
 * @param {number} expected
 * @param {number} maxRetries429
 */
function readKey(key, token, expected, maxRetries429) {
  const res = retryWhileRateLimited(() => readCounter(key, token, { verify: "teardown" }), maxRetries429);
  if (res.status === 404 && expected === 0) return { persisted: "0", pending: "0", total: "0" };
  return res.status === 200 ? parseCounterBody(res.body) : null;
}

/**
 * The options of a verify run: per-vu-iterations, so the plan (and so the expected sums) is fixed by VU and
 * iteration; room in teardown for the polling of verifyTotals; and thresholds that fail the run unless
 * every planned request was accepted (`acceptedMetric` reached `accepted`) and every key checked out.
 * @param {{ vus: number, iterations: number, keys: number, persistTimeout: { seconds: number }, acceptedMetric: string, accepted: number }} plan
 * @returns {import("k6/options").Options}
 */
export function verifyRunOptions(plan) {
  return {
    scenarios: {
      verify: {
        executor: "per-vu-iterations",
        vus: plan.vus,
        iterations: plan.iterations,
        maxDuration: envDuration("MAX_DURATION", "5m").text,
      },
    },
    teardownTimeout: `${Math.ceil(plan.persistTimeout.seconds) + 60}s`,
    thresholds: {
      // Fewer means iterations were cut off by MAX_DURATION or ended in another status, and the expected
      // sums no longer hold.
      [plan.acceptedMetric]: [`count==${plan.accepted}`],
      checks: ["rate==1"],
      verify_ok: ["rate==1"],
      verify_keys_checked: [`count==${plan.keys}`],
    },
  };
}

/**
 * @typedef {object} VerifyTotalsOptions
 * @property {(k: number) => string} keyName the key of index k
 * @property {number[]} expected per key index, the sum of every accepted increment
 * @property {string} token
 * @property {{ seconds: number, text: string }} persistTimeout how long Postgres may take to catch up
 * @property {number} maxRetries429
 * @property {import("k6/metrics").Rate} verifyOk one sample per key: its numbers are right
 * @property {import("k6/metrics").Counter} keysChecked one per key checked
 */

/**
 * Checks tally's central promise for a run's keys: `total` equals the expected sum at once, and `persisted`
 * (Postgres) catches up within `persistTimeout`. Records one verify_ok sample per key, which the scripts'
 * thresholds turn into the exit code.
 * @param {VerifyTotalsOptions} options
 */
export function verifyTotals(options) {
  const { keyName, expected, token, persistTimeout, maxRetries429, verifyOk, keysChecked } = options;
  // Exact comparison as decimal text, the form tally sends; the sums here are far below 2^53.
  const want = expected.map((sum) => String(sum));
  /** @param {number} k */
  const read = (k) => readKey(keyName(k), token, /** @type {number} */ (expected[k]), maxRetries429);

  // Every increment that got a 202 is in Redis or already in Postgres, so `total` must be right at once.
  /** @type {(string | null)[]} */
  const totals = [];
  /** @type {(string | null)[]} */
  const persisted = [];
  for (let k = 0; k < expected.length; k++) {
    const reading = read(k);
    totals.push(reading === null ? null : reading.total);
    persisted.push(reading === null ? null : reading.persisted);
  }

  // `persisted` (Postgres) catches up within a sync cycle or two: poll the keys that lag until they all
  // match or the time is up.
  const deadline = Date.now() + persistTimeout.seconds * 1000;
  while (persisted.some((value, k) => value !== want[k]) && Date.now() < deadline) {
    sleep(1);
    for (let k = 0; k < expected.length; k++) {
      if (persisted[k] === want[k]) continue;
      const reading = read(k);
      persisted[k] = reading === null ? null : reading.persisted;
    }
  }

  for (let k = 0; k < expected.length; k++) {
    const tags = { key: String(k) };
    const totalOk = totals[k] === want[k];
    const persistedOk = persisted[k] === want[k];
    check(null, { "total == sum of accepted increments, at once": () => totalOk }, tags);
    check(
      null,
      { [`persisted == sum of accepted increments, within ${persistTimeout.text}`]: () => persistedOk },
      tags,
    );
    verifyOk.add(totalOk && persistedOk, tags);
    keysChecked.add(1, tags);
    if (!totalOk || !persistedOk) {
      console.error(
        `${keyName(k)}: expected ${want[k]}, total ${totals[k]}, persisted ${persisted[k]} ` +
          `after ${persistTimeout.text}`,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Small helpers

/**
 * @param {number} n
 * @returns {number} a whole number in [0, n)
 */
export function randomInt(n) {
  return Math.floor(Math.random() * n);
}

/**
 * The VU budget of an arrival-rate scenario, overridable with PRE_ALLOCATED_VUS and MAX_VUS: enough VUs up
 * front for requests of ~50 ms at `rate`, and room for k6 to add more, up to `maxDefault`, when the service
 * answers more slowly.
 * @param {number} rate
 * @param {number} maxDefault
 * @returns {{ preAllocatedVUs: number, maxVUs: number }}
 */
export function vuBudget(rate, maxDefault) {
  const preAllocatedVUs = envInt("PRE_ALLOCATED_VUS", Math.max(10, Math.ceil(rate / 20)));
  return { preAllocatedVUs, maxVUs: envInt("MAX_VUS", Math.max(preAllocatedVUs, maxDefault)) };
}

/**
 * The keys a rate script increments: one of KEYS (10000) keys named `<KEY_PREFIX>:<n>` at random. No run id
 * by default: repeated runs hit the same rows, as production traffic does.
 * @param {string} defaultPrefix
 * @returns {() => string}
 */
export function randomKeyFrom(defaultPrefix) {
  const keys = Math.max(1, envInt("KEYS", 10000));
  const prefix = envString("KEY_PREFIX", defaultPrefix);
  return () => `${prefix}:${randomInt(keys)}`;
}

/**
 * The thresholds of a constant-rate increment run (load, soak): they judge the service, not the load
 * generator. Few failures, increment latency within bounds (P95_MS, P99_MS), and some increments accepted.
 * What the generator could not send (dropped_iterations: iterations k6 could not start because every VU was
 * busy, often because k6 shares the cores with the service) and the rate it achieved are in the summary
 * beside them, not thresholds: on a shared machine they measure k6.
 * @returns {Record<string, string[]>}
 */
export function constantRateThresholds() {
  const p95 = envNumber("P95_MS", 50);
  const p99 = envNumber("P99_MS", 200);
  return {
    http_req_failed: ["rate<0.001"],
    "http_req_duration{name:increment}": [`p(95)<${p95}`, `p(99)<${p99}`],
    checks: ["rate>0.999"],
    tally_server_errors: ["rate<0.001"],
    tally_increments_accepted: ["count>0"],
  };
}

/**
 * The client for the request at position `iteration` of the whole test (exec.scenario.iterationInTest):
 * round-robin, so each client gets an even share of the requests, spread evenly over time. Picking at random
 * bunches requests: with 100-point batches a client's share of one second's window sometimes passed its
 * quota and drew 429s.
 * @param {readonly string[]} tokens non-empty
 * @param {number} iteration
 * @returns {string}
 */
export function tokenFor(tokens, iteration) {
  return /** @type {string} */ (tokens[iteration % tokens.length]);
}

/**
 * @template T
 * @param {readonly T[]} items non-empty
 * @returns {T}
 */
export function pick(items) {
  return /** @type {T} */ (items[randomInt(items.length)]);
}

/**
 * @typedef {object} RateStage
 * @property {number} seconds how long the stage lasts
 * @property {number} target iterations per second at its end
 * @property {string} phase label the requests started during it are tagged with
 */

/**
 * The `stages` option of ramping-arrival-rate for a plan.
 * @param {readonly RateStage[]} plan
 * @returns {{ duration: string, target: number }[]}
 */
export function toK6Stages(plan) {
  return plan.map((stage) => ({ duration: `${stage.seconds}s`, target: stage.target }));
}

/**
 * Where a ramping-arrival-rate scenario is `elapsed` seconds after it started: the stage, and the rate k6
 * is aiming at then (it moves linearly from the previous stage's target to this one's). Iterations use this
 * to tag their requests with the phase and to report the offered rate, which k6 does not expose itself.
 * @param {number} startRate
 * @param {readonly RateStage[]} plan non-empty
 * @param {number} elapsed
 * @returns {{ stage: RateStage, rate: number }}
 */
export function positionInPlan(startRate, plan, elapsed) {
  let from = startRate;
  let begin = 0;
  for (const stage of plan) {
    if (elapsed < begin + stage.seconds) {
      const progress = stage.seconds > 0 ? (elapsed - begin) / stage.seconds : 1;
      return { stage, rate: from + (stage.target - from) * Math.min(Math.max(progress, 0), 1) };
    }
    from = stage.target;
    begin += stage.seconds;
  }
  const last = /** @type {RateStage} */ (plan[plan.length - 1]);
  return { stage: last, rate: last.target };
}
