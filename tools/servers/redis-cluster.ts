import { mkdir } from "node:fs/promises";
import path from "node:path";
import { findOnPath, findRedisServer, missingBinaries } from "./binaries.ts";
import { ChildServer, logTails, waitUntilReady } from "./child-server.ts";
import { freePort } from "./ports.ts";
import { redisCommand, redisPing, TALLY_REDIS_SETTINGS } from "./redis.ts";
import { makeTempDir, removeDir } from "./temp-dirs.ts";

// Short enough that a killed master is declared FAIL (and a restarted one cleared) within seconds, long
// enough that a loaded CI machine does not flap.
const NODE_TIMEOUT_MS = 2_000;
const CREATE_TIMEOUT_MS = 30_000;
const HEALTHY_TIMEOUT_MS = 30_000;
const POLL_INTERVAL_MS = 100;
const SLOT_COUNT = 16_384;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface RedisClusterServer {
  /** host:port of every node, e.g. ["127.0.0.1:7001", ...] — what REDIS_CLUSTER_NODES takes, comma-joined */
  readonly nodes: string[];
  /**
   * host:port of every master that owns slots, as a running node sees it. A killed master with no replica
   * to take over stays in the list: it still owns its slots.
   */
  masters(): Promise<string[]>;
  /** host:port of the master owning `key`'s slot (hash tags respected), as a running node sees it. */
  masterOf(key: string): Promise<string>;
  /** host:port of the replicas of `master`, as a running node sees them (failed ones included). */
  replicasOf(master: string): Promise<string[]>;
  /** One command on one node (by host:port), on a connection of its own. */
  command(node: string, command: string, ...args: string[]): Promise<unknown>;
  /** Sends a signal to one node's process: SIGSTOP pauses it (a replica that falls behind), SIGCONT resumes it. */
  signal(node: string, signal: NodeJS.Signals): void;
  /** kill -9 one node (by host:port) and wait for exit. No-op when it is not running. */
  kill(node: string): Promise<void>;
  /** Stop one node cleanly (SIGTERM, which runs redis' SHUTDOWN path: AOF flushed, nodes.conf saved). */
  stop(node: string): Promise<void>;
  /**
   * Start it again on the same port and data dir (nodes.conf + AOF reloaded) and wait until the cluster is
   * healthy again (see waitUntilHealthy). Only waits when it is already running.
   */
  start(node: string): Promise<void>;
  /**
   * Wait until every running node reports cluster_state:ok and sees every other running node connected and
   * not flagged fail/fail?. The second part matters after a restart: a peer may still be reconnecting, and a
   * client that asks it for the slot map would be sent to a node it cannot reach.
   */
  waitUntilHealthy(timeoutMs?: number): Promise<void>;
  /** Kills every node and deletes the data dirs. */
  destroy(): Promise<void>;
}

export interface RedisClusterOptions {
  /** Default 3, the minimum redis-cli accepts. */
  masters?: number;
  /** Replicas per master, default 0. With 1, killing a master makes its replica take over its slots. */
  replicas?: number;
  /** Default "everysec"; "always" for tests that kill -9 a node and expect every acknowledged write back. */
  appendFsync?: "always" | "everysec";
  /**
   * cluster-require-full-coverage, default true as in redis: while any slot has no reachable master, every
   * node refuses every command (CLUSTERDOWN). With false, only the lost slots fail.
   */
  requireFullCoverage?: boolean;
  /** cluster-node-timeout, default 2,000 ms: how long a node may be unreachable before it is failed. */
  nodeTimeoutMs?: number;
}

interface ClusterNodeProcess {
  address: string;
  port: number;
  dir: string;
  logs: string[];
  server: ChildServer;
}

/** One line of CLUSTER NODES. */
interface NodeEntry {
  id: string;
  address: string;
  /** The id of its master, for a replica. */
  masterId: string | undefined;
  flags: string[];
  linkState: string;
  /** Inclusive slot ranges this node serves (migration markers like [5-<-id] are skipped). */
  slots: Array<[number, number]>;
}

function parseClusterNodes(text: string): NodeEntry[] {
  const entries: NodeEntry[] = [];
  for (const line of text.split("\n")) {
    const fields = line.trim().split(" ");
    const [id, addressField, flagsField, masterField, , , , linkState, ...slotFields] = fields;
    if (
      id === undefined ||
      addressField === undefined ||
      flagsField === undefined ||
      masterField === undefined ||
      linkState === undefined
    )
      continue;
    // ip:port@cport[,hostname]
    const address = addressField.split("@")[0] ?? addressField;
    const slots: Array<[number, number]> = [];
    for (const field of slotFields) {
      const match = /^(\d+)(?:-(\d+))?$/.exec(field);
      if (!match) continue;
      const first = Number(match[1]);
      slots.push([first, match[2] === undefined ? first : Number(match[2])]);
    }
    entries.push({
      id,
      address,
      masterId: masterField === "-" ? undefined : masterField,
      flags: flagsField.split(","),
      linkState,
      slots,
    });
  }
  return entries;
}

const isFailing = (entry: NodeEntry) =>
  entry.flags.some(
    (flag) => flag === "fail" || flag === "fail?" || flag === "handshake" || flag === "noaddr",
  );

async function queryText(port: number, command: string, ...args: string[]): Promise<string> {
  const reply = await redisCommand(port, command, ...args);
  if (typeof reply === "string") return reply;
  if (Buffer.isBuffer(reply)) return reply.toString("utf8");
  throw new Error(`unexpected reply to ${command} ${args.join(" ")}: ${String(reply)}`);
}

const describeError = (error: unknown) => (error instanceof Error ? error.message : String(error));

export async function startRedisCluster(options: RedisClusterOptions = {}): Promise<RedisClusterServer> {
  const masterCount = options.masters ?? 3;
  const replicas = options.replicas ?? 0;
  if (!Number.isInteger(masterCount) || masterCount < 3) {
    throw new Error(`a redis cluster needs at least 3 masters, got ${masterCount}`);
  }
  if (!Number.isInteger(replicas) || replicas < 0) throw new Error(`invalid replica count ${replicas}`);
  const redisServer = findRedisServer();
  const redisCli = findOnPath("redis-cli");
  if (!redisCli) throw missingBinaries("redis-cli");

  const baseDir = await makeTempDir("redis-cluster");
  const members: ClusterNodeProcess[] = [];
  const byAddress = new Map<string, ClusterNodeProcess>();

  const destroy = async () => {
    await Promise.all(members.map((member) => member.server.kill()));
    await removeDir(baseDir);
  };

  const member = (node: string): ClusterNodeProcess => {
    const found = byAddress.get(node);
    if (!found)
      throw new Error(`${node} is not a node of this cluster (${[...byAddress.keys()].join(", ")})`);
    return found;
  };
  const running = () => members.filter((candidate) => candidate.server.running);
  const allLogs = () => members.flatMap((candidate) => candidate.logs);

  /** CLUSTER NODES as the first running node that answers sees it. */
  const clusterView = async (): Promise<NodeEntry[]> => {
    const errors: string[] = [];
    for (const candidate of running()) {
      try {
        return parseClusterNodes(await queryText(candidate.port, "CLUSTER", "NODES"));
      } catch (error) {
        errors.push(`${candidate.address}: ${describeError(error)}`);
      }
    }
    throw new Error(
      `no running cluster node answered CLUSTER NODES (${errors.join("; ") || "none running"})`,
    );
  };

  /** Why `node` is not healthy yet, or undefined when it is. */
  const problemOf = async (node: ClusterNodeProcess, runningAddresses: Set<string>) => {
    try {
      const info = await queryText(node.port, "CLUSTER", "INFO");
      const state = /^cluster_state:(\w+)/m.exec(info)?.[1];
      if (state !== "ok") return `${node.address} reports cluster_state:${state ?? "<missing>"}`;
      // Without full coverage required, "ok" alone does not mean every slot has an owner.
      const assigned = /^cluster_slots_assigned:(\d+)/m.exec(info)?.[1];
      if (Number(assigned) !== SLOT_COUNT) return `${node.address} has ${assigned ?? "?"} slots assigned`;
      const view = parseClusterNodes(await queryText(node.port, "CLUSTER", "NODES"));
      for (const address of runningAddresses) {
        const entry = view.find((candidate) => candidate.address === address);
        if (!entry) return `${node.address} does not know ${address}`;
        if (isFailing(entry)) return `${node.address} sees ${address} as ${entry.flags.join(",")}`;
        if (entry.linkState !== "connected") return `${node.address} has no link to ${address}`;
      }
      // A replica without a live link to its master has not synced; promoting it now would lose data.
      if (view.find((entry) => entry.flags.includes("myself"))?.flags.includes("slave")) {
        const replication = await queryText(node.port, "INFO", "replication");
        if (!/^master_link_status:up\b/m.test(replication))
          return `${node.address} has no replication link to its master yet`;
      }
      return undefined;
    } catch (error) {
      return `${node.address}: ${describeError(error)}`;
    }
  };

  const waitUntilHealthy = async (timeoutMs = HEALTHY_TIMEOUT_MS) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const nodes = running();
      if (nodes.length === 0) throw new Error("no cluster node is running");
      const runningAddresses = new Set(nodes.map((node) => node.address));
      const problems = (await Promise.all(nodes.map((node) => problemOf(node, runningAddresses)))).filter(
        (problem) => problem !== undefined,
      );
      if (problems.length === 0) return;
      if (Date.now() >= deadline) {
        throw new Error(
          `redis cluster not healthy within ${timeoutMs} ms: ${problems.join("; ")}${await logTails(allLogs())}`,
        );
      }
      await sleep(POLL_INTERVAL_MS);
    }
  };

  const startNode = async (node: ClusterNodeProcess) => {
    if (node.server.running) return;
    node.server.spawn();
    await waitUntilReady(node.server, () => redisPing(node.port), node.logs);
  };

  const handle: RedisClusterServer = {
    nodes: [],
    masters: async () =>
      (await clusterView())
        .filter((entry) => entry.flags.includes("master") && entry.slots.length > 0)
        .map((entry) => entry.address),
    masterOf: async (key) => {
      const candidate = running()[0];
      if (!candidate) throw new Error("no cluster node is running");
      const slot = Number(await redisCommand(candidate.port, "CLUSTER", "KEYSLOT", key));
      const owner = (await clusterView()).find(
        (entry) => entry.flags.includes("master") && entry.slots.some(([a, b]) => a <= slot && slot <= b),
      );
      if (!owner) throw new Error(`no master owns slot ${slot} (key ${key})`);
      return owner.address;
    },
    replicasOf: async (master) => {
      const view = await clusterView();
      const id = view.find((entry) => entry.address === master)?.id;
      if (id === undefined) throw new Error(`${master} is not in the cluster's view`);
      return view.filter((entry) => entry.masterId === id).map((entry) => entry.address);
    },
    command: (node, command, ...args) => redisCommand(member(node).port, command, ...args),
    signal: (node, signal) => member(node).server.signal(signal),
    kill: (node) => member(node).server.kill(),
    // redis handles SIGTERM exactly like SHUTDOWN; a signal also works when the node is too busy to answer.
    stop: (node) => member(node).server.stop("SIGTERM"),
    start: async (node) => {
      await startNode(member(node));
      await waitUntilHealthy();
    },
    waitUntilHealthy,
    destroy,
  };

  try {
    // Two ports per node: the client port and the cluster bus. The bus port is chosen too (cluster-port)
    // rather than left at port+10000, which for an ephemeral port would often be above 65535 or taken.
    const taken = new Set<number>();
    const uniquePort = async () => {
      for (;;) {
        const port = await freePort();
        if (!taken.has(port)) {
          taken.add(port);
          return port;
        }
      }
    };
    for (let index = 0; index < masterCount * (1 + replicas); index++) {
      const port = await uniquePort();
      const busPort = await uniquePort();
      const dir = path.join(baseDir, String(port));
      await mkdir(dir);
      const redisLog = path.join(dir, "redis.log");
      const stdioLog = path.join(dir, "redis.stdio.log");
      const address = `127.0.0.1:${port}`;
      const node: ClusterNodeProcess = {
        address,
        port,
        dir,
        logs: [stdioLog, redisLog],
        server: new ChildServer({
          name: `redis-server (cluster node) on port ${port}`,
          command: redisServer,
          // biome-ignore format: one flag and its value per line
          args: [
            "--port", String(port),
            "--cluster-port", String(busPort),
            "--bind", "127.0.0.1",
            "--dir", dir,
            "--cluster-enabled", "yes",
            // Relative to --dir: each node keeps its identity and slot map across restarts.
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", String(options.nodeTimeoutMs ?? NODE_TIMEOUT_MS),
            "--cluster-require-full-coverage", options.requireFullCoverage === false ? "no" : "yes",
            "--appendonly", "yes",
            "--appendfsync", options.appendFsync ?? "everysec",
            ...TALLY_REDIS_SETTINGS,
            "--save", "",
            "--daemonize", "no",
            "--logfile", redisLog,
          ],
          cwd: dir,
          logFile: stdioLog,
          owner: undefined,
        }),
      };
      members.push(node);
      byAddress.set(address, node);
      handle.nodes.push(address);
    }
    await Promise.all(members.map(startNode));

    const createLog = path.join(baseDir, "cluster-create.log");
    const create = new ChildServer({
      name: "redis-cli --cluster create",
      command: redisCli,
      args: ["--cluster", "create", ...handle.nodes, "--cluster-replicas", String(replicas), "--cluster-yes"],
      cwd: baseDir,
      logFile: createLog,
      owner: undefined,
    });
    create.spawn();
    if (!(await create.waitForExit(CREATE_TIMEOUT_MS))) {
      await create.kill();
      throw new Error(
        `redis-cli --cluster create did not finish within ${CREATE_TIMEOUT_MS / 1000} s` +
          (await logTails([createLog, ...allLogs()])),
      );
    }
    if (create.exitDescription !== "exit code 0") {
      throw new Error(
        `redis-cli --cluster create failed (${create.exitDescription})${await logTails([createLog, ...allLogs()])}`,
      );
    }
    await waitUntilHealthy();
    const expectedMasters = await handle.masters();
    if (expectedMasters.length !== masterCount) {
      throw new Error(`expected ${masterCount} masters, the cluster has ${expectedMasters.join(", ")}`);
    }
  } catch (error) {
    await destroy();
    throw error;
  }
  return handle;
}
