import { createServer } from "node:http";
import { TallyClient, TallyOutcomeUnknownError } from "../src/index.ts";

// A web server that counts page views through tally. Each request adds one increment and does not wait for
// it: the client batches them, and resolves or rejects each call once tally answered its batch.
//
//   TALLY_URL=http://127.0.0.1:3000 TALLY_TOKEN=$(npm run -s token) node --import tsx client/example/server.ts
const tally = new TallyClient({
  url: process.env.TALLY_URL ?? "http://127.0.0.1:3000",
  token: process.env.TALLY_TOKEN ?? "",
  onError: (error, { attempt, willRetry }) => {
    if (!willRetry) console.error(`tally: a batch failed after ${attempt} attempts: ${error.message}`);
  },
});

const server = createServer((request, response) => {
  const page = new URL(request.url ?? "/", "http://localhost").pathname;
  tally.increment(`views:${page}`).catch((error: unknown) => {
    // Counted once or not at all; resending with its Idempotency-Key settles it without counting twice.
    if (error instanceof TallyOutcomeUnknownError) void tally.resend(error).catch(() => {});
  });
  response.end(`hello from ${page}\n`);
});
server.listen(Number(process.env.PORT ?? 8080), () => console.log("example listening"));

// Stop taking requests, then send every increment still buffered before exiting.
process.once("SIGTERM", () => {
  server.close();
  void tally.close().then(() => process.exit(0));
});
