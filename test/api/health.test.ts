import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestApi, readProblem, type TestApi } from "../support/api.ts";

let api: TestApi;
beforeAll(async () => {
  api = await createTestApi();
});
afterAll(() => api.close());

describe("health endpoints", () => {
  it("/healthz answers without a token", async () => {
    const response = await api.node.app.request("/healthz");
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: "ok" });
  });

  it("/readyz is ready while Redis answers, and 503 once the node drains", async () => {
    expect((await api.node.app.request("/readyz")).status).toBe(200);
    api.node.startDraining();
    const draining = await api.node.app.request("/readyz");
    expect(draining.status).toBe(503);
    expect((await readProblem(draining)).code).toBe("shutting_down");
  });
});
