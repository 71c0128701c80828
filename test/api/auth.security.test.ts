import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { exportJWK, generateKeyPair, SignJWT, UnsecuredJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cacheVerifiedTokens } from "../../api/middleware/auth/token-cache.ts";
import { createTokenVerifier, InvalidTokenError } from "../../api/middleware/auth/verifier.ts";
import { shardKeys } from "../../lib/redis/keyspace.ts";
import { freePort } from "../../tools/servers/ports.ts";
import { createTestApi, readProblem, TEST_SECRET, type TestApi } from "../support/api.ts";

type KeyPair = Awaited<ReturnType<typeof generateKeyPair>>;

const encoder = new TextEncoder();
const now = () => Math.floor(Date.now() / 1000);

function hs256(claims: Record<string, unknown>, secret = TEST_SECRET) {
  return new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).sign(encoder.encode(secret));
}

async function expectUnauthorized(response: Response, error: "invalid_token" | null) {
  expect(response.status).toBe(401);
  expect(response.headers.get("content-type")).toBe("application/problem+json");
  const challenge = response.headers.get("www-authenticate") ?? "";
  expect(challenge).toMatch(/^Bearer realm="tally"/);
  if (error) expect(challenge).toContain(`error="${error}"`);
  else expect(challenge).not.toContain("error=");
}

describe("HS256 tokens", () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await createTestApi();
  });
  afterAll(() => api.close());

  const send = (authorization?: string) =>
    api.node.app.request("/increment", {
      method: "POST",
      headers: authorization === undefined ? {} : { authorization },
      body: JSON.stringify({ key: "secured", value: 1 }),
    });

  it("answers 401 with a bare challenge when no token is sent", async () => {
    await expectUnauthorized(await send(), null);
  });

  it.each([
    ["another scheme", "Basic dXNlcjpwYXNz"],
    ["an empty bearer", "Bearer "],
    ["garbage", "Bearer not-a-jwt"],
    ["two tokens", "Bearer a.b.c d.e.f"],
  ])("rejects %s as invalid_token", async (_name, header) => {
    await expectUnauthorized(await send(header), "invalid_token");
  });

  it("rejects an expired token", async () => {
    await expectUnauthorized(
      await send(`Bearer ${await hs256({ sub: "a", scope: "counters:write", exp: now() - 60 })}`),
      "invalid_token",
    );
  });

  it("rejects a token without exp, or without sub", async () => {
    await expectUnauthorized(
      await send(`Bearer ${await hs256({ sub: "a", scope: "counters:write" })}`),
      "invalid_token",
    );
    await expectUnauthorized(
      await send(`Bearer ${await hs256({ scope: "counters:write", exp: now() + 60 })}`),
      "invalid_token",
    );
  });

  it("rejects a token signed with another key", async () => {
    const forged = await hs256({ sub: "a", scope: "counters:write", exp: now() + 60 }, "x".repeat(40));
    await expectUnauthorized(await send(`Bearer ${forged}`), "invalid_token");
  });

  it("rejects alg: none", async () => {
    const unsigned = new UnsecuredJWT({ sub: "a", scope: "counters:write" }).setExpirationTime("1h").encode();
    await expectUnauthorized(await send(`Bearer ${unsigned}`), "invalid_token");
  });

  it("rejects a token whose payload was altered after signing", async () => {
    const [header, , signature] = (await api.token()).split(".");
    const payload = Buffer.from(
      JSON.stringify({ sub: "mallory", scope: "counters:write", exp: now() + 60 }),
    ).toString("base64url");
    await expectUnauthorized(await send(`Bearer ${header}.${payload}.${signature}`), "invalid_token");
  });

  it("answers 403 with insufficient_scope when the write scope is missing", async () => {
    const response = await send(`Bearer ${await api.token({ scopes: ["counters:read"] })}`);
    expect(response.status).toBe(403);
    expect(response.headers.get("www-authenticate")).toContain(
      'error="insufficient_scope", scope="counters:write"',
    );
  });

  it("answers 403 on reads without the read scope", async () => {
    const token = await api.token({ scopes: ["counters:write"] });
    const response = await api.node.app.request("/counters/x", {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(response.status).toBe(403);
  });

  it("accepts the scheme name in any case", async () => {
    expect((await send(`bearer ${await api.token()}`)).status).toBe(202);
  });

  it("stores nothing for any rejected request", async () => {
    const stored = await api.node.redis.hgetall(shardKeys(api.prefix, 0).dirty);
    expect(stored.secured).toBe("1"); // only the one accepted above
  });
});

describe("claims checked beyond the signature: sub, iat, typ", () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await createTestApi();
  });
  afterAll(() => api.close());

  const send = (authorization: string) =>
    api.node.app.request("/increment", {
      method: "POST",
      headers: { authorization },
      body: JSON.stringify({ key: "claims", value: 1 }),
    });

  it.each([
    ["too long", "s".repeat(256)],
    ["with CRLF", "client\r\nX-Injected: 1"],
    ["with a space", "two words"],
    ["not ASCII", "clïent"],
  ])("rejects a sub that is %s", async (_name, sub) => {
    const response = await send(`Bearer ${await hs256({ sub, scope: "counters:write", exp: now() + 60 })}`);
    await expectUnauthorized(response, "invalid_token");
    expect((await readProblem(response)).detail).toBe(
      "the sub claim must be 1 to 255 visible ASCII characters",
    );
  });

  it("accepts a sub of 255 visible ASCII characters", async () => {
    const sub = "!~".repeat(127).concat("x");
    expect(
      (await send(`Bearer ${await hs256({ sub, scope: "counters:write", exp: now() + 60 })}`)).status,
    ).toBe(202);
  });

  it("rejects a token issued in the future beyond the clock leeway, and accepts one within it", async () => {
    const future = await send(
      `Bearer ${await hs256({ sub: "a", scope: "counters:write", iat: now() + 3_600, exp: now() + 7_200 })}`,
    );
    await expectUnauthorized(future, "invalid_token");
    expect((await readProblem(future)).detail).toBe("the token was issued in the future (iat)");
    const skewed = await send(
      `Bearer ${await hs256({ sub: "a", scope: "counters:write", iat: now() + 2, exp: now() + 60 })}`,
    );
    expect(skewed.status).toBe(202);
  });

  it.each(["JWT", "at+jwt", "application/at+JWT"])("accepts typ %s", async (typ) => {
    const token = await new SignJWT({ sub: "a", scope: "counters:write", exp: now() + 60 })
      .setProtectedHeader({ alg: "HS256", typ })
      .sign(encoder.encode(TEST_SECRET));
    expect((await send(`Bearer ${token}`)).status).toBe(202);
  });

  it.each<unknown>(["dpop+jwt", "logout+jwt", "JWS", [], 5])(
    "rejects typ %j: a token meant for something else, or no type at all",
    async (typ) => {
      const token = await new SignJWT({ sub: "a", scope: "counters:write", exp: now() + 60 })
        // A header may hold any JSON where jose's types say string.
        .setProtectedHeader({ alg: "HS256", typ: typ as string })
        .sign(encoder.encode(TEST_SECRET));
      const response = await send(`Bearer ${token}`);
      await expectUnauthorized(response, "invalid_token");
      expect((await readProblem(response)).detail).toBe("the token's typ header is not JWT or at+jwt");
    },
  );
});

describe("JWT_MAX_LIFETIME_S", () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await createTestApi({ JWT_MAX_LIFETIME_S: "3600" });
  });
  afterAll(() => api.close());

  const send = async (claims: Record<string, unknown>) =>
    api.increment(
      { key: "lifetime", value: 1 },
      await hs256({ sub: "a", scope: "counters:write", ...claims }),
    );

  it("accepts a token valid for at most the limit", async () => {
    expect((await send({ iat: now(), exp: now() + 3_600 })).status).toBe(202);
    expect((await send({ exp: now() + 1_800 })).status).toBe(202);
  });

  it("rejects one valid for longer, counted from iat, or from now without iat", async () => {
    for (const claims of [
      { iat: now(), exp: now() + 7_200 },
      { iat: now() - 7_200, exp: now() + 60 },
      { exp: now() + 7_200 },
    ]) {
      const response = await send(claims);
      await expectUnauthorized(response, "invalid_token");
      expect((await readProblem(response)).detail).toContain("longer than the 3600 s");
    }
  });
});

describe("issuer and audience", () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await createTestApi({ JWT_ISSUER: "https://issuer.test", JWT_AUDIENCE: "tally" });
  });
  afterAll(() => api.close());

  it.each([
    ["right issuer and audience", { iss: "https://issuer.test", aud: "tally" }, 202],
    ["wrong issuer", { iss: "https://evil.test", aud: "tally" }, 401],
    ["wrong audience", { iss: "https://issuer.test", aud: "other" }, 401],
    ["neither", {}, 401],
  ])("%s", async (_name, claims, status) => {
    const token = await hs256({ sub: "a", scope: "counters:write", exp: now() + 60, ...claims });
    const response = await api.increment({ key: "k", value: 1 }, token);
    expect(response.status).toBe(status);
  });
});

describe("JWKS (RS256 / ES256)", () => {
  let jwks: Server;
  let api: TestApi;
  let es256: KeyPair;
  let rs256: KeyPair;

  beforeAll(async () => {
    es256 = await generateKeyPair("ES256", { extractable: true });
    rs256 = await generateKeyPair("RS256", { extractable: true });
    const keys = [
      { ...(await exportJWK(es256.publicKey)), kid: "es", alg: "ES256", use: "sig" },
      { ...(await exportJWK(rs256.publicKey)), kid: "rs", alg: "RS256", use: "sig" },
    ];
    jwks = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys }));
    });
    await new Promise<void>((resolve) => jwks.listen(0, "127.0.0.1", resolve));
    const { port } = jwks.address() as AddressInfo;
    api = await createTestApi({ JWT_SECRET: "", JWT_JWKS_URL: `http://127.0.0.1:${port}/jwks.json` });
  });
  afterAll(async () => {
    await api.close();
    await new Promise((resolve) => jwks.close(resolve));
  });

  const sign = (alg: "ES256" | "RS256", key: KeyPair["privateKey"], kid: string) =>
    new SignJWT({ sub: "jwks-client", scope: "counters:write" })
      .setProtectedHeader({ alg, kid })
      .setExpirationTime("5m")
      .sign(key);

  it("accepts ES256 and RS256 tokens signed by a published key", async () => {
    expect(
      (await api.increment({ key: "j", value: 1 }, await sign("ES256", es256.privateKey, "es"))).status,
    ).toBe(202);
    expect(
      (await api.increment({ key: "j", value: 1 }, await sign("RS256", rs256.privateKey, "rs"))).status,
    ).toBe(202);
  });

  it("rejects a token signed by an unpublished key", async () => {
    const stranger = await generateKeyPair("ES256");
    await expectUnauthorized(
      await api.increment({ key: "j", value: 1 }, await sign("ES256", stranger.privateKey, "es")),
      "invalid_token",
    );
  });

  it("rejects HS256 in JWKS mode (no key confusion with a public key as the secret)", async () => {
    const publicJwk = JSON.stringify(await exportJWK(rs256.publicKey));
    const confused = await new SignJWT({ sub: "a", scope: "counters:write" })
      .setProtectedHeader({ alg: "HS256", kid: "rs" })
      .setExpirationTime("5m")
      .sign(encoder.encode(publicJwk));
    await expectUnauthorized(await api.increment({ key: "j", value: 1 }, confused), "invalid_token");
  });

  it("answers 503, not 401, when the key server cannot be reached", async () => {
    const unreachable = await createTestApi({
      JWT_SECRET: "",
      JWT_JWKS_URL: `http://127.0.0.1:${await freePort()}/jwks`,
    });
    try {
      const response = await unreachable.increment(
        { key: "j", value: 1 },
        await sign("ES256", es256.privateKey, "es"),
      );
      expect(response.status).toBe(503);
      expect((await readProblem(response)).code).toBe("auth_unavailable");
      expect(response.headers.get("retry-after")).toBe("5");
    } finally {
      await unreachable.close();
    }
  });

  it("answers 503 when the key server answers with an error", async () => {
    const broken = createServer((_req, res) => res.writeHead(500).end());
    await new Promise<void>((resolve) => broken.listen(0, "127.0.0.1", resolve));
    const { port } = broken.address() as AddressInfo;
    const failing = await createTestApi({ JWT_SECRET: "", JWT_JWKS_URL: `http://127.0.0.1:${port}/jwks` });
    try {
      const response = await failing.increment(
        { key: "j", value: 1 },
        await sign("ES256", es256.privateKey, "es"),
      );
      expect(response.status).toBe(503);
    } finally {
      await failing.close();
      await new Promise((resolve) => broken.close(resolve));
    }
  });
});

describe("a signing key withdrawn from the JWKS", () => {
  it("stops verifying its cached tokens once the token cache and the JWKS have aged out", async () => {
    const key = await generateKeyPair("ES256", { extractable: true });
    let published = [{ ...(await exportJWK(key.publicKey)), kid: "old", alg: "ES256", use: "sig" }];
    const server = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: published }));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const verify = cacheVerifiedTokens(
        createTokenVerifier(
          { mode: "jwks", jwksUrl: `http://127.0.0.1:${port}/jwks` },
          { jwksMaxAgeMs: 200 },
        ),
        { maxAgeMs: 200 },
      );
      const token = await new SignJWT({ sub: "rotated", scope: "counters:write" })
        .setProtectedHeader({ alg: "ES256", kid: "old" })
        .setExpirationTime("1h")
        .sign(key.privateKey);
      expect((await verify(token)).subject).toBe("rotated");

      published = [];
      // Both ages have run out: the token is verified again, against a JWKS fetched again.
      await sleep(450);
      await expect(verify(token)).rejects.toThrow(InvalidTokenError);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe("auth disabled by configuration", () => {
  it("accepts requests without a token", async () => {
    const api = await createTestApi({ AUTH_DISABLED: "true" });
    try {
      const response = await api.node.app.request("/increment", {
        method: "POST",
        body: JSON.stringify({ key: "open", value: 1 }),
      });
      expect(response.status).toBe(202);
    } finally {
      await api.close();
    }
  });
});
