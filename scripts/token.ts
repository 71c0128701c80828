import { parseArgs } from "node:util";
import { loadConfigOrExit } from "../lib/config.ts";
import { mintToken } from "../lib/tokens.ts";

// `npm run token -- --sub <client> [--scope "counters:write counters:read"] [--ttl 3600]`
// Prints a token signed with the service's JWT_SECRET (or the development secret when none is set).
const { values } = parseArgs({
  options: {
    sub: { type: "string" },
    scope: { type: "string", default: "counters:write counters:read" },
    ttl: { type: "string", default: "3600" },
  },
});
const config = loadConfigOrExit();
if (config.auth.mode !== "hs256") {
  process.stderr.write(
    "npm run token signs HS256 tokens: set JWT_SECRET (with JWKS, your identity provider issues tokens)\n",
  );
  process.exit(64);
}
const ttlSeconds = Number(values.ttl);
if (!values.sub || !Number.isInteger(ttlSeconds) || ttlSeconds <= 0) {
  process.stderr.write(
    'usage: npm run token -- --sub <client> [--scope "counters:write counters:read"] [--ttl seconds]\n',
  );
  process.exit(64);
}
const token = await mintToken({
  secret: config.auth.secret,
  subject: values.sub,
  scopes: values.scope.split(/\s+/).filter(Boolean),
  ttlSeconds,
  issuer: config.auth.issuer,
  audience: config.auth.audience,
});
process.stdout.write(`${token}\n`);
