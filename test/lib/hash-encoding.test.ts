import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it, onTestFinished } from "vitest";
import { connectRedis, createRedis } from "../../lib/redis/client.ts";
import { RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES, watchHashEncoding } from "../../lib/redis/hash-encoding.ts";
import { captureLogger, type LogLine } from "../support/logger.ts";
import { usePrivateRedis } from "../support/redis.ts";

// The API's advice on how Redis encodes the dirty hashes, read from a real Redis whose setting the test moves.

const store = usePrivateRedis();

async function settle(lines: LogLine[], count: number): Promise<void> {
  for (let i = 0; i < 50 && lines.length < count; i++) await sleep(20);
  // Long enough for a line that should not come to come.
  await sleep(100);
}

const warnings = (lines: LogLine[]) => lines.filter((line) => line.level === "warn");

describe("watchHashEncoding", () => {
  it("warns once per master while hashes of more fields than recommended stay listpacks, not again when the client reconnects", async () => {
    await store.redis.config("SET", "hash-max-listpack-entries", "512");
    const { logger, lines } = captureLogger("debug");
    const stop = watchHashEncoding(store.redis, logger);
    onTestFinished(stop);
    await settle(lines, 1);
    expect(warnings(lines)).toHaveLength(1);
    expect(warnings(lines)[0]).toMatchObject({
      hashMaxListpackEntries: 512,
      recommended: RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES,
      node: expect.stringContaining(String(store.server.port)),
    });
    expect(warnings(lines)[0]?.msg).toContain("hash-max-listpack-entries 32");

    store.redis.disconnect(true);
    await new Promise((resolve) => store.redis.once("ready", resolve));
    await settle(lines, 2);
    expect(warnings(lines)).toHaveLength(1);
  });

  it("says nothing at the recommended setting", async () => {
    await store.redis.config(
      "SET",
      "hash-max-listpack-entries",
      String(RECOMMENDED_HASH_MAX_LISTPACK_ENTRIES),
    );
    const { logger, lines } = captureLogger("debug");
    onTestFinished(watchHashEncoding(store.redis, logger));
    await settle(lines, 1);
    expect(lines).toEqual([]);
  });

  it("leaves a Redis that refuses CONFIG unchecked, with a debug line and nothing thrown", async () => {
    await store.redis.config("SET", "hash-max-listpack-entries", "512");
    await store.redis.call("ACL", "SETUSER", "no-config", "on", ">secret", "~*", "&*", "+@all", "-config");
    const client = createRedis({
      url: `redis://no-config:secret@127.0.0.1:${store.server.port}`,
      name: "test-no-config",
      commandTimeoutMs: 5_000,
    });
    client.on("error", () => {});
    await connectRedis(client);
    onTestFinished(() => client.disconnect());
    const { logger, lines } = captureLogger("debug");
    onTestFinished(watchHashEncoding(client, logger));
    await settle(lines, 1);
    expect(lines.map(({ level, msg }) => ({ level, msg }))).toEqual([
      { level: "debug", msg: "cannot read hash-max-listpack-entries" },
    ]);
  });
});
