import { createServer } from "node:http";
import { inWorkers, portAndWorkers } from "./workers.ts";

// The floor of any HTTP service on this machine: node:http that reads the body, parses the JSON and answers
// 202, and nothing else (no framework, no auth, no validation, no Redis).
// `node --import tsx bench/baselines/bare-http.ts <port> <workers>`.
const { port, workers } = portAndWorkers();
inWorkers(workers, `bare-http listening on ${port}`, (listening) => {
  createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      JSON.parse(Buffer.concat(chunks).toString("utf8"));
      response.statusCode = 202;
      response.end();
    });
  }).listen(port, "127.0.0.1", listening);
});
