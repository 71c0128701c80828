// Smoke test: a handful of increments and a read, to check a deployment answers correctly.
//   k6 run -e BASE_URL=http://127.0.0.1:3333 -e TOKEN=$(npm run -s token -- --sub k6) k6/smoke.js
import { check } from "k6";
import http from "k6/http";

export const options = {
  vus: 1,
  iterations: 20,
  thresholds: {
    http_req_failed: ["rate==0"],
    checks: ["rate==1"],
  },
};

const BASE_URL = __ENV.BASE_URL || "http://127.0.0.1:3333";
const TOKEN = __ENV.TOKEN;

export function setup() {
  if (!TOKEN) throw new Error("pass a token: -e TOKEN=$(npm run -s token -- --sub k6)");
}

export default function () {
  const headers = { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" };
  const response = http.post(`${BASE_URL}/increment`, JSON.stringify({ key: "k6:smoke", value: 1 }), {
    headers,
  });
  check(response, { "increment accepted (202)": (r) => r.status === 202 });
  const read = http.get(`${BASE_URL}/counters/k6:smoke`, { headers });
  check(read, { "counter readable (200)": (r) => r.status === 200 });
}
