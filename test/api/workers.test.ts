import { describe, expect, it } from "vitest";
import { workerExecArgv } from "../../api/workers.ts";

describe("workerExecArgv", () => {
  it("keeps the primary's flags and caps the young generation", () => {
    expect(workerExecArgv(["--enable-source-maps"], "")).toEqual([
      "--enable-source-maps",
      "--max-semi-space-size=8",
    ]);
  });

  it("leaves the cap to an operator who set one, on the command line or in NODE_OPTIONS, in either spelling", () => {
    expect(workerExecArgv(["--max-semi-space-size=32"], "")).toEqual(["--max-semi-space-size=32"]);
    expect(workerExecArgv([], "--max-old-space-size=512 --max_semi_space_size=64")).toEqual([]);
  });

  it("is not fooled by a flag that only starts the same way", () => {
    expect(workerExecArgv([], "--max-semi-space-sizes=1")).toEqual(["--max-semi-space-size=8"]);
  });
});
