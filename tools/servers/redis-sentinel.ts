import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { findRedisServer } from "./binaries.ts";
import { ChildServer, waitUntilReady } from "./child-server.ts";
import { freePort } from "./ports.ts";
import { redisCommand, redisPing, TALLY_REDIS_SETTINGS } from "./redis.ts";
import { makeTempDir, removeDir } from "./temp-dirs.ts";

const POLL_INTERVAL_MS = 100;

export interface RedisSentinelOptions {
  /** Replicas of the first master, default 1. */
  replicas?: number;
  /** Sentinel processes, default 1 (quorum: a majority of them). */
  sentinels?: number;
  /** How long the master may not answer before the Sentinels hold it for down, default 1,000 ms. */
  downAfterMs?: number;
}

export interface RedisSentinelDeployment {
  /** The name the Sentinels know the master by: what REDIS_SENTINEL_MASTER takes. */
  readonly masterName: string;
  /** host:port of every Sentinel: what REDIS_SENTINELS takes, comma-joined. */
  readonly sentinels: string[];
  /** host:port of every Redis node (the first master and its replicas). */
  readonly nodes: string[];
  /** host:port of the master, as the first Sentinel that answers names it. */
  master(): Promise<string>;
  /** The nodes that are not the master the Sentinels name. */
  replicas(): Promise<string[]>;
  /** One command on one node, or on a Sentinel, on a connection of its own. */
  command(node: string, command: string, ...args: string[]): Promise<unknown>;
  /** Sends a signal to one node: SIGSTOP pauses it (a replica that falls behind), SIGCONT resumes it. */
  signal(node: string, signal: NodeJS.Signals): void;
  /** kill -9 one node and wait for its exit. */
  kill(node: string): Promise<void>;
  /** Starts a node again on its port and data dir; it comes back as the master it was until told otherwise. */
  start(node: string): Promise<void>;
  /** Waits until the Sentinels name a master other than `previous`, and returns it. */
  waitForNewMaster(previous: string, timeoutMs?: number): Promise<string>;
  /** Waits until every running node but the master replicates from it with its link up. */
  waitUntilReplicating(timeoutMs?: number): Promise<void>;
  destroy(): Promise<void>;
}

interface Member {
  address: string;
  port: number;
  server: ChildServer;
  logs: string[];
}

/**
 * A Redis master with replicas and Sentinels that watch it, on free loopback ports: what a deployment with
 * automatic failover outside Redis Cluster runs. The Sentinels promote a replica when the master stops
 * answering for `downAfterMs`.
 */
export async function startRedisSentinel(
  options: RedisSentinelOptions = {},
): Promise<RedisSentinelDeployment> {
  const replicaCount = options.replicas ?? 1;
  const sentinelCount = options.sentinels ?? 1;
  const downAfterMs = options.downAfterMs ?? 1_000;
  const masterName = "tally-master";
  const redisServer = findRedisServer();
  const baseDir = await makeTempDir("redis-sentinel");
  const members = new Map<string, Member>();
  const sentinelMembers: Member[] = [];

  const spawnMember = async (
    name: string,
    args: (port: number, dir: string) => string[],
    prepare?: (dir: string) => Promise<void>,
  ) => {
    const port = await freePort();
    const dir = path.join(baseDir, `${name}-${port}`);
    await mkdir(dir);
    await prepare?.(dir);
    const stdioLog = path.join(dir, "stdio.log");
    const redisLog = path.join(dir, "redis.log");
    const member: Member = {
      address: `127.0.0.1:${port}`,
      port,
      logs: [stdioLog, redisLog],
      server: new ChildServer({
        name: `${name} on port ${port}`,
        command: redisServer,
        args: [...args(port, dir), "--logfile", redisLog],
        cwd: dir,
        logFile: stdioLog,
        owner: undefined,
      }),
    };
    member.server.spawn();
    await waitUntilReady(member.server, () => redisPing(port), member.logs);
    return member;
  };
  // biome-ignore format: one flag and its value per line
  const nodeArgs = (port: number, dir: string) => [
    "--port", String(port),
    "--bind", "127.0.0.1",
    "--dir", dir,
    "--appendonly", "yes",
    "--appendfsync", "everysec",
    ...TALLY_REDIS_SETTINGS,
    "--save", "",
    "--daemonize", "no",
  ];

  const destroy = async () => {
    await Promise.all([...members.values(), ...sentinelMembers].map((member) => member.server.kill()));
    await removeDir(baseDir);
  };
  const member = (node: string) => {
    const found = members.get(node) ?? sentinelMembers.find((candidate) => candidate.address === node);
    if (!found) throw new Error(`${node} is not a node of this deployment`);
    return found;
  };

  try {
    const first = await spawnMember("master", nodeArgs);
    members.set(first.address, first);
    for (let i = 0; i < replicaCount; i++) {
      const replica = await spawnMember("replica", (port, dir) => [
        ...nodeArgs(port, dir),
        "--replicaof",
        "127.0.0.1",
        String(first.port),
      ]);
      members.set(replica.address, replica);
    }
    const quorum = Math.floor(sentinelCount / 2) + 1;
    // Sentinels rewrite their configuration file, so each gets one of its own.
    const sentinelConfig = [
      `sentinel monitor ${masterName} 127.0.0.1 ${first.port} ${quorum}`,
      `sentinel down-after-milliseconds ${masterName} ${downAfterMs}`,
      `sentinel failover-timeout ${masterName} ${downAfterMs * 3}`,
      `sentinel parallel-syncs ${masterName} 1`,
      "",
    ].join("\n");
    for (let i = 0; i < sentinelCount; i++) {
      const sentinel = await spawnMember(
        "sentinel",
        (port, dir) => [
          path.join(dir, "sentinel.conf"),
          "--sentinel",
          "--port",
          String(port),
          "--bind",
          "127.0.0.1",
          "--dir",
          dir,
        ],
        (dir) => writeFile(path.join(dir, "sentinel.conf"), sentinelConfig),
      );
      sentinelMembers.push(sentinel);
    }
  } catch (error) {
    await destroy();
    throw error;
  }

  const askMaster = async (): Promise<string> => {
    for (const sentinel of sentinelMembers) {
      try {
        const reply = (await redisCommand(
          sentinel.port,
          "SENTINEL",
          "GET-MASTER-ADDR-BY-NAME",
          masterName,
        )) as [string, string] | null;
        if (reply) return `${reply[0]}:${reply[1]}`;
      } catch {
        // Try the next one.
      }
    }
    throw new Error("no Sentinel names the master");
  };

  const deployment: RedisSentinelDeployment = {
    masterName,
    sentinels: sentinelMembers.map((sentinel) => sentinel.address),
    nodes: [...members.keys()],
    master: askMaster,
    replicas: async () => {
      const master = await askMaster();
      return [...members.keys()].filter((node) => node !== master);
    },
    command: (node, command, ...args) => redisCommand(member(node).port, command, ...args),
    signal: (node, signal) => member(node).server.signal(signal),
    kill: (node) => member(node).server.kill(),
    start: async (node) => {
      const target = member(node);
      if (target.server.running) return;
      target.server.spawn();
      await waitUntilReady(target.server, () => redisPing(target.port), target.logs);
    },
    waitForNewMaster: async (previous, timeoutMs = 30_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const master = await askMaster().catch(() => previous);
        if (master !== previous) return master;
        if (Date.now() > deadline)
          throw new Error(`the Sentinels still name ${previous} after ${timeoutMs} ms`);
        await sleep(POLL_INTERVAL_MS);
      }
    },
    waitUntilReplicating: async (timeoutMs = 30_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const master = await askMaster();
        const replicas = [...members.values()].filter(
          (candidate) => candidate.address !== master && candidate.server.running,
        );
        const states = await Promise.all(
          replicas.map(async (replica) => {
            const info = String(await redisCommand(replica.port, "INFO", "replication").catch(() => ""));
            const [host, port] = master.split(":");
            return (
              info.includes(`master_host:${host}`) &&
              info.includes(`master_port:${port}`) &&
              /master_link_status:up/.test(info)
            );
          }),
        );
        if (states.every(Boolean)) return;
        if (Date.now() > deadline) throw new Error(`the replicas do not replicate from ${master} yet`);
        await sleep(POLL_INTERVAL_MS);
      }
    },
    destroy,
  };
  await deployment.waitUntilReplicating();
  return deployment;
}
