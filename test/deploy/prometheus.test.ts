import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findOnPath } from "../../tools/servers/binaries.ts";
import { ChildServer, waitUntilReady } from "../../tools/servers/child-server.ts";
import { freePort } from "../../tools/servers/ports.ts";
import { waitFor } from "../harness/fixtures.ts";
import { Deployment } from "../support/deployment.ts";

// deploy/prometheus/ and deploy/grafana/ against the real thing: promtool checks and unit-tests the alert
// rules, and a real Prometheus scrapes a running API node and syncer with those rules loaded. Every metric
// docs/operations.md names must be there, every rule must evaluate without error, and every dashboard
// panel's query must run.

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const RULES = path.join(ROOT, "deploy/prometheus/rules/tally.rules.yml");
const RULE_TESTS = path.join(ROOT, "deploy/prometheus/rules/tally.rules.test.yml");
const DASHBOARD = path.join(ROOT, "deploy/grafana/dashboards/tally.json");

function binary(name: "prometheus" | "promtool"): string {
  const found = findOnPath(name);
  if (found === null) throw new Error(`this test needs ${name}; install it with: apt-get install prometheus`);
  return found;
}

describe("the alert rules", () => {
  it("pass promtool check rules", async () => {
    const { stdout } = await run(binary("promtool"), ["check", "rules", RULES]);
    expect(stdout).toMatch(/SUCCESS: 11 rules found/);
  });

  it("pass their promtool unit tests: each alert fires on its series and stays quiet on others", async () => {
    const { stdout } = await run(binary("promtool"), ["test", "rules", RULE_TESTS]);
    expect(stdout).toMatch(/SUCCESS/);
  });

  it("each link to a runbook entry of docs/operations.md that exists, one per alert", async () => {
    const rules = await readFile(RULES, "utf8");
    const alerts = [...rules.matchAll(/- alert: (\w+)/g)].map((match) => match[1]);
    const runbooks = [...rules.matchAll(/runbook_url: docs\/operations\.md#(\S+)/g)].map((match) => match[1]);
    const docs = await readFile(path.join(ROOT, "docs/operations.md"), "utf8");
    const headings = [...docs.matchAll(/^#### (\w+)$/gm)].map((match) => match[1]?.toLowerCase());
    expect(runbooks).toEqual(alerts.map((alert) => alert?.toLowerCase()));
    expect(runbooks.filter((anchor) => !headings.includes(anchor))).toEqual([]);
  });
});

describe("a real Prometheus scraping an API node and a syncer", () => {
  let dir: string;
  let prometheus: ChildServer;
  let url: string;
  let deployment: Deployment;
  beforeAll(async () => {
    deployment = await Deployment.create({ env: { SYNC_SHARDS: "4" } });
    const api = await deployment.startApi();
    const syncer = await deployment.startSyncer();
    // Traffic enough for the labelled series: an accepted increment, a refused one, a read.
    const token = await deployment.token();
    const post = (body: unknown) =>
      fetch(`${api.url}/increment`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    expect((await post({ key: "scraped", value: 1 })).status).toBe(202);
    expect((await post({ key: "scraped" })).status).toBe(400);

    dir = await mkdtemp(path.join(os.tmpdir(), "tally-prometheus-"));
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    const target = (metricsUrl: string) => new URL(metricsUrl).host;
    await writeFile(
      path.join(dir, "prometheus.yml"),
      [
        "global: { scrape_interval: 1s, evaluation_interval: 1s }",
        `rule_files: [${JSON.stringify(RULES)}]`,
        "scrape_configs:",
        `  - { job_name: tally-api, static_configs: [{ targets: [${JSON.stringify(target(api.metricsUrl))}] }] }`,
        `  - { job_name: tally-syncer, static_configs: [{ targets: [${JSON.stringify(target(syncer.metricsUrl))}] }] }`,
        "",
      ].join("\n"),
    );
    const logFile = path.join(dir, "prometheus.log");
    prometheus = new ChildServer({
      name: `prometheus on port ${port}`,
      command: binary("prometheus"),
      args: [
        `--config.file=${path.join(dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${path.join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      cwd: dir,
      logFile,
      owner: undefined,
    });
    prometheus.spawn();
    await waitUntilReady(
      prometheus,
      () =>
        fetch(`${url}/-/ready`).then(
          (r) => r.ok,
          () => false,
        ),
      [logFile],
    );
    // Both targets scraped, and every rule evaluated at least once.
    await waitFor(
      async () => {
        const targets = await prometheusApi(url, "targets");
        const active = (targets as { activeTargets: { health: string }[] }).activeTargets;
        const rules = (await prometheusApi(url, "rules")) as {
          groups: { rules: { lastEvaluation: string }[] }[];
        };
        const evaluated = rules.groups
          .flatMap((group) => group.rules)
          .every((rule) => !rule.lastEvaluation.startsWith("0001"));
        return active.length === 2 && active.every((t) => t.health === "up") && evaluated;
      },
      { timeoutMs: 30_000, message: "Prometheus did not scrape both targets and evaluate the rules" },
    );
  }, 90_000);
  afterAll(async () => {
    await prometheus?.kill();
    await deployment?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("holds every metric docs/operations.md names", async () => {
    const docs = await readFile(path.join(ROOT, "docs/operations.md"), "utf8");
    const table = docs.slice(docs.indexOf("## Metrics"), docs.indexOf("### Alerts"));
    const named = [...table.matchAll(/^\| (`tally_[a-z_]+`(?:, `tally_[a-z_]+`)*) \|/gm)].flatMap((row) =>
      [...(row[1] ?? "").matchAll(/`(tally_[a-z_]+)`/g)].map((name) => name[1] as string),
    );
    expect(named.length).toBeGreaterThan(20);
    const names = new Set((await prometheusApi(url, "label/__name__/values")) as string[]);
    const metadata = (await prometheusApi(url, "metadata")) as Record<string, unknown>;
    // A labelled metric nothing has happened to yet has no series, but its family was scraped (metadata).
    const missing = named.filter(
      (name) => !names.has(name) && !names.has(`${name}_bucket`) && !(name in metadata),
    );
    expect(missing).toEqual([]);
  });

  it("evaluates every alert rule without error", async () => {
    const { groups } = (await prometheusApi(url, "rules")) as {
      groups: { rules: { name: string; health: string; lastError?: string }[] }[];
    };
    const rules = groups.flatMap((group) => group.rules);
    expect(rules).toHaveLength(11);
    expect(rules.filter((rule) => rule.health !== "ok")).toEqual([]);
  });

  it("answers every dashboard panel's query", async () => {
    const dashboard = JSON.parse(await readFile(DASHBOARD, "utf8")) as {
      panels: { title: string; targets: { expr: string }[] }[];
    };
    const queries = dashboard.panels.flatMap((panel) =>
      panel.targets.map((t) => ({ panel: panel.title, expr: t.expr })),
    );
    expect(queries.length).toBeGreaterThan(10);
    for (const { panel, expr } of queries) {
      const response = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(expr)}`);
      const body = (await response.json()) as { status: string; error?: string };
      expect({ panel, expr, status: body.status, error: body.error }).toEqual({
        panel,
        expr,
        status: "success",
        error: undefined,
      });
    }
  });
});

/** GET /api/v1/<what>'s data, or throws with Prometheus' error. */
async function prometheusApi(base: string, what: string): Promise<unknown> {
  const body = (await (await fetch(`${base}/api/v1/${what}`)).json()) as {
    status: string;
    data: unknown;
    error?: string;
  };
  if (body.status !== "success") throw new Error(`Prometheus /api/v1/${what}: ${body.error}`);
  return body.data;
}
