import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { generateLoad, type LoadResult } from "../tools/load/throughput.ts";
import { freePort } from "../tools/servers/ports.ts";
import { type RedisServer, startRedis } from "../tools/servers/redis.ts";
import { spawnTally, type TallyProcess } from "../tools/tally-process.ts";
import { cpuSecondsOfTree } from "./proc.ts";

// What acknowledgements cost. On a master with one replica: REDIS_WAIT_REPLICAS=1 against 0. On a single
// Redis: the default, auto (which finds no replica and sends no WAIT), against 0. Each setting is an API node
// of its own, measured in alternating rounds under the same load.

const ROUNDS = 3;
const DURATION_S = 8;
const WARMUP_S = 3;
const SINGLE_CONNECTIONS = 64;
const BATCH_CONNECTIONS = 16;
const BATCH_SIZE = 100;
const KEYS = 10_000;

/**
 * A run of load, and the CPU the API node (primary and workers) spent per request in it: steadier than
 * throughput on a machine the load generator and Redis share.
 */
export interface MeasuredLoad extends LoadResult {
  cpuUsPerRequest: number;
}

/** Requests per second of one setting against another, per kind of request. */
export interface Comparison {
  /** What is measured, e.g. "REDIS_WAIT_REPLICAS=1", and what against. */
  setting: string;
  baseline: string;
  /** POST /increment, SINGLE_CONNECTIONS connections. */
  single: { setting: MeasuredLoad[]; baseline: MeasuredLoad[] };
  /** POST /increments of BATCH_SIZE, BATCH_CONNECTIONS connections. */
  batches: { setting: MeasuredLoad[]; baseline: MeasuredLoad[] };
}

export interface ReplicaResults {
  workers: number;
  rounds: number;
  durationS: number;
  batchSize: number;
  /** On a master with one replica. */
  withReplica: Comparison;
  /** On a single Redis without replicas. */
  single: Comparison;
}

export interface ReplicaBenchOptions {
  workers: number;
  token: string;
  /** The service's environment without Redis (JWT_SECRET, DATABASE_URL, …). */
  env: Record<string, string>;
  log: (line: string) => void;
  cleanups: (() => Promise<unknown>)[];
}

export async function measureReplicas(options: ReplicaBenchOptions): Promise<ReplicaResults> {
  const master = await startRedis();
  options.cleanups.push(() => master.destroy());
  const replica = await startRedis({ args: ["--replicaof", "127.0.0.1", String(master.port)] });
  options.cleanups.push(() => replica.destroy());
  await untilOnline(master);
  const alone = await startRedis();
  options.cleanups.push(() => alone.destroy());

  const withReplica = await compare(
    options,
    master,
    ["REDIS_WAIT_REPLICAS=1", "1"],
    ["REDIS_WAIT_REPLICAS=0", "0"],
  );
  const single = await compare(
    options,
    alone,
    ["auto (no replica found)", "auto"],
    ["REDIS_WAIT_REPLICAS=0", "0"],
  );
  return {
    workers: options.workers,
    rounds: ROUNDS,
    durationS: DURATION_S,
    batchSize: BATCH_SIZE,
    withReplica,
    single,
  };
}

/** Two API nodes on `redis`, one per REDIS_WAIT_REPLICAS value, and a syncer draining it meanwhile. */
async function compare(
  options: ReplicaBenchOptions,
  redis: RedisServer,
  [settingName, settingValue]: [string, string],
  [baselineName, baselineValue]: [string, string],
): Promise<Comparison> {
  const { token, log, cleanups } = options;
  const env = { ...options.env, REDIS_URL: redis.url, METRICS_PORT: "0" };
  const node = async (waitReplicas: string) => {
    const port = await freePort();
    const api = spawnTally("dist/api/main.js", {
      ...env,
      REDIS_WAIT_REPLICAS: waitReplicas,
      API_WORKERS: String(options.workers),
      PORT: String(port),
    });
    cleanups.push(() => api.stop("SIGKILL"));
    await untilReady(api, `http://127.0.0.1:${port}`);
    return { api, url: `http://127.0.0.1:${port}`, pid: api.child.pid ?? 0 };
  };
  const syncer = spawnTally("dist/syncer/main.js", env);
  cleanups.push(() => syncer.stop("SIGKILL"));
  const setting = await node(settingValue);
  const baseline = await node(baselineValue);

  const batchBody = JSON.stringify({
    increments: Array.from({ length: BATCH_SIZE }, (_, i) => ({ key: `bench:ack-batch:${i}`, value: 1 })),
  });
  const single = (target: { url: string; pid: number }, durationS: number) =>
    measured(target.pid, () =>
      generateLoad({
        url: `${target.url}/increment`,
        token,
        connections: SINGLE_CONNECTIONS,
        keys: KEYS,
        durationS,
      }),
    );
  const batch = (target: { url: string; pid: number }, durationS: number) =>
    measured(target.pid, () =>
      generateLoad({
        url: `${target.url}/increments`,
        token,
        connections: BATCH_CONNECTIONS,
        keys: BATCH_SIZE,
        body: batchBody,
        durationS,
      }),
    );
  for (const target of [setting, baseline]) {
    await single(target, WARMUP_S);
    await batch(target, WARMUP_S);
  }
  const comparison: Comparison = {
    setting: settingName,
    baseline: baselineName,
    single: { setting: [], baseline: [] },
    batches: { setting: [], baseline: [] },
  };
  for (let round = 1; round <= ROUNDS; round++) {
    // Each pair in the other order every round, so that a drift of the machine favours neither.
    const pair = round % 2 === 1 ? [setting, baseline] : [baseline, setting];
    for (const target of pair) {
      const side = target === setting ? "setting" : "baseline";
      comparison.single[side].push(await single(target, DURATION_S));
    }
    for (const target of pair) {
      const side = target === setting ? "setting" : "baseline";
      comparison.batches[side].push(await batch(target, DURATION_S));
    }
    log(
      `bench: acknowledgements, ${settingName} / ${baselineName}, round ${round}: single ${rate(comparison.single.setting)} / ${rate(comparison.single.baseline)} req/s; batches of ${BATCH_SIZE} ${rate(comparison.batches.setting)} / ${rate(comparison.batches.baseline)} req/s`,
    );
  }
  await Promise.all([setting.api, baseline.api, syncer].map((process) => process.stop("SIGKILL")));
  return comparison;
}

async function measured(pid: number, load: () => Promise<LoadResult>): Promise<MeasuredLoad> {
  const before = cpuSecondsOfTree(pid);
  const result = await load();
  const cpuUsPerRequest = ((cpuSecondsOfTree(pid) - before) * 1e6) / Math.max(1, result.requests);
  return { ...result, cpuUsPerRequest };
}

function rate(runs: LoadResult[]): string {
  return runs.at(-1)?.requestsPerSecond.toFixed(0) ?? "?";
}

async function untilOnline(master: RedisServer): Promise<void> {
  const client = new Redis(master.port);
  try {
    for (let attempt = 0; attempt < 300; attempt++) {
      if ((await client.info("replication")).includes("state=online")) return;
      await sleep(100);
    }
    throw new Error("the replica did not come online");
  } finally {
    client.disconnect();
  }
}

async function untilReady(api: TallyProcess, url: string): Promise<void> {
  for (let attempt = 0; attempt < 300; attempt++) {
    if (
      await fetch(`${url}/readyz`).then(
        (response) => response.ok,
        () => false,
      )
    )
      return;
    await sleep(100);
  }
  throw new Error(`the API did not become ready:\n${JSON.stringify(api.logs.slice(-10))}`);
}
