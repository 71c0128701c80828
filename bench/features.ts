import { type ApiInstance, createApiInstance } from "../api/instance.ts";
import { parseConfig } from "../lib/config.ts";
import { createLogger } from "../lib/logger.ts";
import { connectRedis } from "../lib/redis/client.ts";

// What each feature of a single increment costs, by ablation: an API instance per variant, each with one
// feature switched off (or, for idempotency, used), driven in this process through its fetch handler by as
// many concurrent callers as the HTTP bench has connections, in alternating rounds. The figure is this
// process' CPU per request (process.cpuUsage), which leaves out what is the same for every variant (Node's
// HTTP parsing, the socket) and the noise of other processes on a shared machine.

const ROUNDS = 3;
const DURATION_S = 4;
const WARMUP_S = 2;
const CALLERS = 64;
const KEYS = 10_000;

interface Variant {
  /** What differs from the default configuration, as the table shows it. */
  name: string;
  env: Record<string, string>;
  /** Every request with an Idempotency-Key of its own. */
  idempotencyKeys?: boolean;
}

export const EVERYTHING_ON = "everything on (the defaults)";
const VARIANTS: Variant[] = [
  { name: EVERYTHING_ON, env: {} },
  { name: "AUTH_DISABLED=true", env: { AUTH_DISABLED: "true" } },
  { name: "RATE_LIMIT_DISABLED=true", env: { RATE_LIMIT_DISABLED: "true" } },
  { name: "HTTP_METRICS_DISABLED=true", env: { HTTP_METRICS_DISABLED: "true" } },
  { name: "LOG_LEVEL=silent", env: { LOG_LEVEL: "silent" } },
  {
    name: "all three off, LOG_LEVEL=silent",
    env: {
      AUTH_DISABLED: "true",
      RATE_LIMIT_DISABLED: "true",
      HTTP_METRICS_DISABLED: "true",
      LOG_LEVEL: "silent",
    },
  },
  { name: "an Idempotency-Key on every request", env: {}, idempotencyKeys: true },
];

export interface FeatureRun {
  cpuUsPerRequest: number;
  requestsPerSecond: number;
  /** Answers other than 202: a variant that fails is not measuring what it claims. */
  errors: number;
}

export interface FeatureCosts {
  callers: number;
  rounds: number;
  durationS: number;
  variants: { name: string; runs: FeatureRun[] }[];
}

export interface FeatureBenchOptions {
  token: string;
  /** The service's environment (REDIS_URL, DATABASE_URL, JWT_SECRET, …). */
  env: Record<string, string>;
  log: (line: string) => void;
  cleanups: (() => Promise<unknown>)[];
}

export async function measureFeatureCosts(options: FeatureBenchOptions): Promise<FeatureCosts> {
  const { token, log, cleanups } = options;
  const nodes: { variant: Variant; instance: ApiInstance; runs: FeatureRun[] }[] = [];
  for (const variant of VARIANTS) {
    const config = parseConfig({ LOG_LEVEL: "info", ...options.env, ...variant.env });
    // Where a request would log, it logs for real, into nothing.
    const logger = createLogger({ level: config.logLevel, role: "api", destination: { write: () => {} } });
    const instance = createApiInstance(config, logger);
    cleanups.push(async () => {
      instance.redis.disconnect();
      instance.writes.disconnect();
      instance.replicas.stop();
      await instance.pool.end();
    });
    await Promise.all([connectRedis(instance.redis), connectRedis(instance.writes)]);
    await Promise.all([instance.redisMemory.check(), instance.replicas.check()]);
    nodes.push({ variant, instance, runs: [] });
  }

  let sent = 0;
  const drive = async (node: (typeof nodes)[number], durationS: number): Promise<FeatureRun> => {
    const deadline = performance.now() + durationS * 1_000;
    let requests = 0;
    let errors = 0;
    const cpuBefore = process.cpuUsage();
    const began = performance.now();
    await Promise.all(
      Array.from({ length: CALLERS }, async () => {
        while (performance.now() < deadline) {
          sent++;
          const headers: Record<string, string> = {
            authorization: `Bearer ${token}`,
            "content-type": "application/json",
          };
          if (node.variant.idempotencyKeys) headers["idempotency-key"] = `features-${process.pid}-${sent}`;
          const response = await node.instance.app.request("/increment", {
            method: "POST",
            headers,
            body: `{"key":"bench:features:${sent % KEYS}","value":1}`,
          });
          await response.arrayBuffer();
          requests++;
          if (response.status !== 202) errors++;
        }
      }),
    );
    const cpu = process.cpuUsage(cpuBefore);
    return {
      cpuUsPerRequest: (cpu.user + cpu.system) / Math.max(1, requests),
      requestsPerSecond: (requests * 1_000) / (performance.now() - began),
      errors,
    };
  };

  for (const node of nodes) await drive(node, WARMUP_S);
  for (let round = 1; round <= ROUNDS; round++) {
    // The other order every round, so that a drift of the machine favours no variant.
    for (const node of round % 2 === 1 ? nodes : [...nodes].reverse())
      node.runs.push(await drive(node, DURATION_S));
    log(
      `bench: features, round ${round}: ${nodes.map((node) => `${node.variant.name} ${node.runs.at(-1)?.cpuUsPerRequest.toFixed(1)} µs`).join(" | ")}`,
    );
  }
  return {
    callers: CALLERS,
    rounds: ROUNDS,
    durationS: DURATION_S,
    variants: nodes.map((node) => ({ name: node.variant.name, runs: node.runs })),
  };
}
