import { parseArgs } from "node:util";
import * as v from "valibot";
import { loadConfigOrExit } from "../lib/config.ts";
import { mintToken, PREFIXES_RULE, PREFIXES_SCHEMA, SUBJECT_PATTERN } from "../lib/tokens.ts";

// Prints a token signed with the service's JWT_SECRET (or the development secret when none is set).
const USAGE =
  'usage: npm run token -- --sub <client> [--scope "counters:write counters:read"] [--prefix <p>]... [--ttl seconds]\n' +
  "  <client>: 1 to 255 visible ASCII characters; seconds: a whole number above 0\n" +
  "  --prefix: confine the token to keys starting with <p> (repeat for several); without it, every key\n" +
  "  scopes: counters:write, counters:read, counters:reset\n";

function parseArguments() {
  try {
    return parseArgs({
      options: {
        sub: { type: "string" },
        scope: { type: "string", default: "counters:write counters:read" },
        prefix: { type: "string", multiple: true },
        ttl: { type: "string", default: "3600" },
        help: { type: "boolean", short: "h", default: false },
      },
    }).values;
  } catch (error) {
    // An unknown option or a missing value: parseArgs' own message, then the usage; no stack.
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n${USAGE}`);
    process.exit(64);
  }
}

const values = parseArguments();
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const config = loadConfigOrExit();
if (config.auth.mode !== "hs256") {
  process.stderr.write(
    "npm run token signs HS256 tokens: set JWT_SECRET (with JWKS, your identity provider issues tokens)\n",
  );
  process.exit(64);
}
const ttlSeconds = Number(values.ttl);
if (!values.sub || !SUBJECT_PATTERN.test(values.sub) || !Number.isInteger(ttlSeconds) || ttlSeconds <= 0) {
  process.stderr.write(USAGE);
  process.exit(64);
}
const prefixes = v.safeParse(v.optional(PREFIXES_SCHEMA), values.prefix);
if (!prefixes.success) {
  process.stderr.write(`--prefix: the prefixes must be ${PREFIXES_RULE}\n${USAGE}`);
  process.exit(64);
}
const token = await mintToken({
  secret: config.auth.secret,
  subject: values.sub,
  scopes: values.scope.split(/\s+/).filter(Boolean),
  prefixes: prefixes.output,
  ttlSeconds,
  issuer: config.auth.issuer,
  audience: config.auth.audience,
});
// On stderr, so that TOKEN=$(npm run -s token …) still captures the token alone.
if (process.env.JWT_SECRET === undefined)
  process.stderr.write(
    "npm run token: JWT_SECRET is not set, so this token is signed with the built-in development secret: only a service that runs without JWT_SECRET too accepts it; any other answers 401\n",
  );
process.stdout.write(`${token}\n`);
