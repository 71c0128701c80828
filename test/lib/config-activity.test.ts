import { describe, expect, it } from "vitest";
import { ConfigError, parseConfig } from "../../lib/config.ts";
import { activityStreamKey } from "../../lib/redis/keyspace.ts";

// The per-minute activity settings (STATS_STREAM*, STATS_WEBHOOK_*); pure parsing, explicit environments.

describe("activity configuration", () => {
  it("defaults: the stream under the key prefix, a week of minutes, no webhook, 5 s timeout", () => {
    const config = parseConfig({ REDIS_KEY_PREFIX: "shop" });

    expect(config.activity).toEqual({
      stream: undefined,
      streamMaxLen: 10_080,
      webhookUrl: undefined,
      webhookTimeoutMs: 5_000,
    });
    // What syncer/process.ts makes of an unset STATS_STREAM: several tallies on one Redis stay apart.
    expect(activityStreamKey(config.redis.keyPrefix)).toBe("shop:activity");
  });

  it("reads set values", () => {
    const config = parseConfig({
      STATS_STREAM: "metrics:{tally}:activity",
      STATS_STREAM_MAXLEN: " 0 ",
      STATS_WEBHOOK_URL: "https://hooks.example.com/tally?token=x",
      STATS_WEBHOOK_TIMEOUT_MS: "250",
    });

    expect(config.activity).toEqual({
      stream: "metrics:{tally}:activity",
      streamMaxLen: 0,
      webhookUrl: "https://hooks.example.com/tally?token=x",
      webhookTimeoutMs: 250,
    });
  });

  it.each([
    ["STATS_STREAM", "has space"],
    ["STATS_STREAM_MAXLEN", "-1"],
    ["STATS_STREAM_MAXLEN", "lots"],
    ["STATS_WEBHOOK_URL", "ftp://example.com/hook"],
    ["STATS_WEBHOOK_URL", "not a url"],
    ["STATS_WEBHOOK_TIMEOUT_MS", "0"],
  ])("rejects %s=%j, naming the variable", (name, value) => {
    expect(() => parseConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => parseConfig({ [name]: value })).toThrow(name);
  });
});
