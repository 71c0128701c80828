import { createServer } from "node:http";

// The bar tally is measured against: a bare node:http server that reads the body, parses the JSON and
// answers 202, and nothing else (no auth, no validation, no Redis). `node bench/baseline.ts <port>`.
const port = Number(process.argv[2] ?? 4000);
createServer((request, response) => {
  const chunks: Buffer[] = [];
  request.on("data", (chunk: Buffer) => chunks.push(chunk));
  request.on("end", () => {
    JSON.parse(Buffer.concat(chunks).toString("utf8"));
    response.statusCode = 202;
    response.end();
  });
}).listen(port, "127.0.0.1", () => process.stdout.write(`baseline listening on ${port}\n`));
