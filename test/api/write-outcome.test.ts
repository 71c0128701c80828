import { describe, expect, it } from "vitest";
import type { PartResult } from "../../api/store/part-result.ts";
import { writeOutcome } from "../../api/store/write-outcome.ts";
import { writeProblem } from "../../api/store-problems.ts";

// A request's outcome from its shard parts', and the one table that answers it.

const part = (result: PartResult, indexes: number[]) => ({ result, indexes });

describe("writeOutcome", () => {
  it("is applied when every part is, replayed when every part was", () => {
    expect(writeOutcome([part({ kind: "applied" }, [0]), part({ kind: "replayed" }, [1])], 2, true)).toEqual({
      kind: "applied",
    });
    expect(writeOutcome([part({ kind: "replayed" }, [0, 1])], 2, true)).toEqual({ kind: "replayed" });
  });

  it("names the request's positions refused, and how many increments other shards applied", () => {
    const outcome = writeOutcome(
      [part({ kind: "applied" }, [0, 2]), part({ kind: "overflow", position: 1 }, [1, 3, 4])],
      5,
      false,
    );
    expect(outcome).toEqual({
      kind: "overflow",
      positions: [3],
      partly: { applied: 2, total: 5 },
      idempotent: false,
    });
    if (outcome.kind !== "overflow") throw new Error("an overflow was expected");
    const problem = writeProblem(outcome, "increments");
    expect(problem.code).toBe("counter_out_of_range");
    expect(problem.errors).toEqual([
      {
        pointer: "/increments/3/value",
        detail: "the pending total for this key would leave the 64-bit range",
      },
    ]);
    expect(problem.message).toBe(
      "1 increment(s) refused: the pending total for this key would leave the 64-bit range. 2 of the 5 increments were applied (other shards). A retry would count those again; send batches with an Idempotency-Key to retry them safely.",
    );
  });

  it("answers the weightiest failure: a reused key, then capacity, then replicas, then Redis, then overflow", () => {
    const failed = part({ kind: "failed", failure: "timeout" }, [0]);
    const unconfirmed = part({ kind: "unconfirmed" }, [1]);
    const full = part({ kind: "full" }, [2]);
    const reused = part({ kind: "reused" }, [3]);
    const overflow = part({ kind: "overflow", position: 0 }, [4]);
    const kind = (parts: ReturnType<typeof part>[]) => writeOutcome(parts, 5, true).kind;
    expect(kind([overflow, failed, unconfirmed, full, reused])).toBe("reused");
    expect(kind([overflow, failed, unconfirmed, full])).toBe("full");
    expect(kind([overflow, failed, unconfirmed])).toBe("unconfirmed");
    expect(kind([overflow, failed])).toBe("failed");
    expect(kind([overflow])).toBe("overflow");
  });

  it("tells a write Redis did not take from one whose outcome is unknown", () => {
    const answer = (failure: "unreachable" | "timeout" | "oom") => {
      const outcome = writeOutcome([part({ kind: "failed", failure }, [0])], 1, false);
      if (outcome.kind !== "failed") throw new Error("a failure was expected");
      return writeProblem(outcome, "increment");
    };
    expect(answer("unreachable")).toMatchObject({
      code: "redis_unavailable",
      message: expect.stringContaining("it was not counted"),
    });
    expect(answer("timeout")).toMatchObject({
      code: "redis_unavailable",
      message: expect.stringContaining("may or may not"),
    });
    expect(answer("oom")).toMatchObject({
      code: "redis_full",
      headers: { "Retry-After": "5" },
      redisError: "oom",
    });
  });
});
