import { Redis } from "ioredis";
import { promotableInSentinelReplicas } from "./replicas.ts";

// Sentinels answer in well under this; one that does not is skipped for the next.
const SENTINEL_TIMEOUT_MS = 1_000;

/** Asks the Sentinels which replicas of a master they could promote (SENTINEL REPLICAS). */
export class SentinelReplicas {
  readonly #master: string;
  readonly #clients: Redis[];

  constructor(sentinels: readonly { host: string; port: number }[], master: string) {
    this.#master = master;
    this.#clients = sentinels.map(
      ({ host, port }) =>
        new Redis({
          host,
          port,
          lazyConnect: true,
          enableOfflineQueue: false,
          maxRetriesPerRequest: 0,
          commandTimeout: SENTINEL_TIMEOUT_MS,
          connectTimeout: SENTINEL_TIMEOUT_MS,
          retryStrategy: () => 1_000,
          connectionName: "tally-replica-watch",
        }),
    );
    // A Sentinel that is down is one of several; the master's own connection reports Redis being down.
    for (const client of this.#clients) client.on("error", () => {});
  }

  /** The replicas the first Sentinel to answer could promote. */
  async promotable(): Promise<number> {
    let lastError: unknown;
    for (const client of this.#clients) {
      try {
        if (client.status === "wait") await client.connect();
        return promotableInSentinelReplicas(await client.call("SENTINEL", "REPLICAS", this.#master));
      } catch (error) {
        lastError = error;
      }
    }
    throw lastError ?? new Error("no Sentinel configured");
  }

  close(): void {
    for (const client of this.#clients) client.disconnect();
  }
}
