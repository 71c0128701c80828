import { describe, expect, it } from "vitest";
import { FailureStreak } from "../../lib/failure-streak.ts";
import { captureLogger } from "../support/logger.ts";

describe("FailureStreak", () => {
  it("logs a streak once, reminds at most every period with its length and attempts, and logs its end", () => {
    const { logger, lines } = captureLogger();
    let now = 0;
    const streak = new FailureStreak(logger, "cannot reach the store", {
      remindEveryMs: 30_000,
      now: () => now,
    });

    for (; now < 65_000; now += 1_000) streak.failed(new Error("ECONNREFUSED"));
    streak.succeeded();
    streak.succeeded();

    expect(
      lines.map(({ level, msg, reason, failingForSeconds, attempts }) => ({
        level,
        msg,
        reason,
        failingForSeconds,
        attempts,
      })),
    ).toEqual([
      {
        level: "warn",
        msg: "cannot reach the store",
        reason: "ECONNREFUSED",
        failingForSeconds: undefined,
        attempts: undefined,
      },
      {
        level: "warn",
        msg: "cannot reach the store (still)",
        reason: "ECONNREFUSED",
        failingForSeconds: 30,
        attempts: 31,
      },
      {
        level: "warn",
        msg: "cannot reach the store (still)",
        reason: "ECONNREFUSED",
        failingForSeconds: 60,
        attempts: 61,
      },
      {
        level: "info",
        msg: "cannot reach the store: recovered",
        reason: undefined,
        failingForSeconds: undefined,
        attempts: 65,
      },
    ]);
    expect(lines[3]?.failedForSeconds).toBe(65);

    // A new streak starts over.
    streak.failed("timeout");
    expect(lines.at(-1)).toMatchObject({ msg: "cannot reach the store", reason: "timeout" });
  });
});
