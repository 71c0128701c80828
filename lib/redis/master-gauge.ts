import { Gauge, type Registry } from "prom-client";

/** One series of a per-master gauge: its labels besides `node`, and its value. */
export interface MasterSample {
  node: string;
  value: number;
  policy?: string;
}

/**
 * Registers a gauge with one series per Redis master, taken from the watch's latest readings at each scrape.
 * Aggregated with "max", not the default sum: an API node's primary adds up its workers' registries, and
 * each worker reads the same Redis.
 */
export function registerMasterGauge(
  registry: Registry,
  spec: { name: string; help: string; withPolicy?: boolean },
  samples: () => Iterable<MasterSample>,
): void {
  new Gauge({
    name: spec.name,
    help: spec.help,
    labelNames: spec.withPolicy ? (["node", "policy"] as const) : (["node"] as const),
    aggregator: "max",
    registers: [registry],
    collect() {
      this.reset();
      for (const { value, ...labels } of samples()) this.set(labels, value);
    },
  });
}
