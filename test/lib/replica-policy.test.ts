import { describe, expect, it } from "vitest";
import { REPLICA_MEMORY_MS, ReplicaPolicy } from "../../lib/redis/replica-policy.ts";
import {
  myIdInClusterNodes,
  parseReplicationInfo,
  promotableInClusterNodes,
  promotableInSentinelReplicas,
  type ReplicaReading,
  versionAtLeast,
} from "../../lib/redis/replicas.ts";

// How many replicas a write waits for, decided from readings and a clock handed in.

const reading = (node: string, fields: Partial<ReplicaReading> = {}): ReplicaReading => ({
  node,
  connected: 0,
  promotable: 0,
  fenced: false,
  version: "7.0.15",
  aof: true,
  ...fields,
});

describe("ReplicaPolicy", () => {
  it("asks for the configured number whatever the readings say", () => {
    const policy = new ReplicaPolicy(2, true);
    expect(policy.required("a:1", 0)).toBe(2);
    policy.noteReading(reading("a:1", { promotable: 0 }), 0);
    expect(policy.required("a:1", 0)).toBe(2);
    expect(policy.observesConnections).toBe(false);
  });

  it("auto: one for a master not read yet, then one only where a failover could promote a replica", () => {
    const policy = new ReplicaPolicy("auto", true);
    expect(policy.observesConnections).toBe(true);
    expect(policy.required("a:1", 0)).toBe(1);
    policy.noteReading(reading("a:1", { promotable: 0 }), 10);
    expect(policy.required("a:1", 10)).toBe(0);
    // The topology names a replica whose replication link is down: it may be promoted behind.
    policy.noteReading(reading("a:1", { connected: 0, promotable: 1 }), 20);
    expect(policy.required("a:1", 20)).toBe(1);
  });

  it("auto with a topology: a replica seen online since the last reading counts until the next one", () => {
    const policy = new ReplicaPolicy("auto", true);
    policy.noteReading(reading("a:1"), 10);
    policy.noteConnected("a:1", 1, 15);
    expect(policy.required("a:1", 15)).toBe(1);
    // The next reading says the replica is gone for good (the bus holds it for failed).
    policy.noteReading(reading("a:1", { promotable: 0 }), 20);
    expect(policy.required("a:1", 20)).toBe(0);
    // No replica online at the round: nothing changes.
    policy.noteConnected("a:1", 0, 25);
    expect(policy.required("a:1", 25)).toBe(0);
  });

  it("auto without a topology: a replica seen connected counts for REPLICA_MEMORY_MS after it was last seen", () => {
    const policy = new ReplicaPolicy("auto", false);
    policy.noteReading(reading("a:1", { connected: 1, promotable: 1 }), 0);
    // Its link dropped: the next reading sees none, but it may be back in a moment, behind.
    policy.noteReading(reading("a:1", { connected: 0, promotable: 0 }), 5_000);
    expect(policy.required("a:1", 5_000)).toBe(1);
    expect(policy.required("a:1", REPLICA_MEMORY_MS - 1)).toBe(1);
    expect(policy.required("a:1", REPLICA_MEMORY_MS)).toBe(0);
  });

  it("forgets masters not read since a time, and keeps the others", () => {
    const policy = new ReplicaPolicy("auto", true);
    policy.noteReading(reading("old:1", { promotable: 0 }), 0);
    policy.noteReading(reading("new:1", { promotable: 0 }), 100);
    policy.forgetUnreadSince(50);
    expect(policy.knows("old:1")).toBe(false);
    expect(policy.knows("new:1")).toBe(true);
    expect(policy.readings.map(({ node }) => node)).toEqual(["new:1"]);
  });
});

describe("reading what Redis says of its replicas", () => {
  it("parses INFO replication, persistence and server", () => {
    const info = [
      "# Replication",
      "role:master",
      "connected_slaves:1",
      "min_slaves_good_slaves:1",
      "slave0:ip=127.0.0.1,port=7002,state=online,offset=42,lag=0",
      "# Persistence",
      "aof_enabled:1",
      "# Server",
      "redis_version:7.0.15",
      "",
    ].join("\r\n");
    expect(parseReplicationInfo("a:1", info)).toEqual({
      node: "a:1",
      connected: 1,
      fenced: true,
      version: "7.0.15",
      aof: true,
    });
    expect(() => parseReplicationInfo("a:1", "role:master\r\n")).toThrow("lacks connected_slaves");
  });

  it("counts a master's replicas that the cluster bus does not hold for failed", () => {
    const nodes = [
      "m1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460",
      "r1 127.0.0.1:7004@17004 slave m1 0 1 1 connected",
      "r2 127.0.0.1:7005@17005 slave,fail? m1 0 1 1 connected",
      "r3 127.0.0.1:7006@17006 slave,fail m1 0 1 1 disconnected",
      "r4 127.0.0.1:7007@17007 slave m2 0 1 2 connected",
      "",
    ].join("\n");
    expect(myIdInClusterNodes(nodes)).toBe("m1");
    expect(promotableInClusterNodes(nodes, "m1")).toBe(2);
    expect(promotableInClusterNodes(nodes, "m9")).toBe(0);
  });

  it("counts the replicas the Sentinels do not hold for down", () => {
    const replica = (flags: string) => ["name", "127.0.0.1:7002", "ip", "127.0.0.1", "flags", flags];
    expect(
      promotableInSentinelReplicas([
        replica("slave"),
        replica("s_down,slave"),
        replica("slave,disconnected"),
        replica("o_down,slave"),
      ]),
    ).toBe(1);
    expect(promotableInSentinelReplicas(null)).toBe(0);
  });

  it("compares versions by their numbers", () => {
    expect(versionAtLeast("7.2.4", "7.2")).toBe(true);
    expect(versionAtLeast("7.10.0", "7.2")).toBe(true);
    expect(versionAtLeast("7.0.15", "7.2")).toBe(false);
    expect(versionAtLeast("8.0.1", "7.2")).toBe(true);
  });
});
