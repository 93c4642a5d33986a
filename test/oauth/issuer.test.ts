import assert from 'node:assert/strict';
import { type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, mock, test } from 'node:test';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { metadataUrls, trustedIssuer } from '../../src/oauth/issuer.js';

/**
 * A would-be identity provider whose answers each test chooses, path by path; `hits` counts what
 * it was asked. What turnpike must do with a provider that misbehaves: refuse to trust it, fetch
 * nothing more than it must, and never call it the caller's fault.
 */
let routes: Record<string, (res: ServerResponse) => void> = {};
const hits: string[] = [];
let origin = '';
const server = createServer((req, res) => {
  hits.push(req.url!);
  const route = routes[req.url!];
  if (route) route(res);
  else res.writeHead(404).end();
});
const json = (body: unknown) => (res: ServerResponse) =>
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));

describe('an issuer’s metadata and keys are fetched bounded, and only from it', () => {
  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const expected = { audience: 'http://gateway.test/mcp/a', scopes: [] };
  async function token(issuer: string) {
    const { privateKey } = await generateKeyPair('ES256');
    return new SignJWT({ sub: 'agent', iss: issuer, aud: expected.audience })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setExpirationTime('5m')
      .sign(privateKey);
  }

  test('metadata is looked for where RFC 8414 and OpenID Connect put it, the issuer’s path inserted and then appended', () => {
    assert.deepEqual(metadataUrls('https://id.example.com/tenant/'), [
      'https://id.example.com/.well-known/oauth-authorization-server/tenant',
      'https://id.example.com/.well-known/openid-configuration/tenant',
      'https://id.example.com/tenant/.well-known/openid-configuration',
    ]);
    assert.deepEqual(metadataUrls('https://id.example.com'), [
      'https://id.example.com/.well-known/oauth-authorization-server',
      'https://id.example.com/.well-known/openid-configuration',
    ]);
  });

  test('metadata naming another issuer, redirecting elsewhere, or larger than 64 KiB is not trusted: 503, and the redirect is not followed', async () => {
    const issuer = `${origin}/a`;
    routes = {
      '/.well-known/oauth-authorization-server/a': json({ issuer: 'https://evil.example.com', jwks_uri: `${origin}/jwks` }),
      '/.well-known/openid-configuration/a': (res) => res.writeHead(302, { location: `${origin}/elsewhere` }).end(),
      '/a/.well-known/openid-configuration': json({ issuer, jwks_uri: `${origin}/jwks`, padding: 'x'.repeat(70_000) }),
    };
    hits.length = 0;
    const check = await trustedIssuer(issuer).verify(await token(issuer), expected);
    assert.equal(check.ok, false);
    assert.equal(!check.ok && check.status, 503);
    assert.ok(!hits.includes('/elsewhere'), 'the redirect was not followed');
    assert.ok(!hits.includes('/jwks'), 'no key set named by untrusted metadata was fetched');
  });

  test('after a failure the provider is not asked again within the cooldown, however many tokens come', async () => {
    const issuer = `${origin}/b`;
    routes = {};
    const idp = trustedIssuer(issuer);
    const jwt = await token(issuer);
    await idp.verify(jwt, expected);
    const asked = hits.length;
    for (let i = 0; i < 5; i++) assert.equal((await idp.verify(jwt, expected)).ok, false);
    assert.equal(hits.length, asked);
  });

  test('a key set that answers 500 is the provider’s failure (503), not the token’s (401)', async () => {
    const issuer = `${origin}/c`;
    routes = {
      '/.well-known/oauth-authorization-server/c': json({ issuer, jwks_uri: `${origin}/c/jwks` }),
      '/c/jwks': (res) => res.writeHead(500).end(),
    };
    const check = await trustedIssuer(issuer).verify(await token(issuer), expected);
    assert.equal(!check.ok && check.status, 503);
  });

  test('a key set that answers is used: the token signed by its key is taken', async () => {
    const issuer = `${origin}/d`;
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    routes = {
      '/.well-known/oauth-authorization-server/d': json({ issuer, jwks_uri: `${origin}/d/jwks` }),
      '/d/jwks': json({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }] }),
    };
    const jwt = await new SignJWT({ sub: 'agent', iss: issuer, aud: expected.audience, scope: 'a b' })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setExpirationTime('5m')
      .sign(privateKey);
    assert.deepEqual(await trustedIssuer(issuer).verify(jwt, expected), {
      ok: true,
      principal: { issuer, subject: 'agent', scopes: ['a', 'b'] },
    });
  });

  test('an https issuer whose metadata names a key set over plain http is not trusted (503): the keys that judge its tokens come over TLS', async () => {
    const issuer = 'https://id.example.test';
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const asked: string[] = [];
    const documents: Record<string, unknown> = {
      [`${issuer}/.well-known/oauth-authorization-server`]: { issuer, jwks_uri: 'http://id.example.test/jwks' },
      'http://id.example.test/jwks': { keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }] },
    };
    const fetchImpl = (async (url: string) => {
      asked.push(url);
      return url in documents ? Response.json(documents[url]) : new Response(null, { status: 404 });
    }) as unknown as typeof fetch;
    const jwt = await new SignJWT({ sub: 'agent', iss: issuer, aud: expected.audience })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setExpirationTime('5m')
      .sign(privateKey);
    const check = await trustedIssuer(issuer, fetchImpl).verify(jwt, expected);
    assert.equal(!check.ok && check.status, 503);
    assert.ok(!asked.includes('http://id.example.test/jwks'), 'the plain-http key set was not fetched');
  });

  test('a token with an unknown key id cannot make the keys in hand unusable: when the refetch it causes fails, tokens of known keys are still taken, and nothing is fetched again within the cooldown', async () => {
    const issuer = `${origin}/f`;
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const keys = json({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }] });
    let keysUp = true;
    routes = {
      '/.well-known/oauth-authorization-server/f': json({ issuer, jwks_uri: `${origin}/f/jwks` }),
      '/f/jwks': (res) => (keysUp ? keys(res) : res.writeHead(503).end()),
    };
    const sign = (kid: string, key = privateKey) =>
      new SignJWT({ sub: 'agent', iss: issuer, aud: expected.audience })
        .setProtectedHeader({ alg: 'ES256', kid })
        .setExpirationTime('1h')
        .sign(key);
    const known = await sign('k1');
    const stranger = await sign('stranger', (await generateKeyPair('ES256')).privateKey);
    // Only Date moves: past jose's cooldown since the keys were fetched, so an unknown kid makes it refetch.
    mock.timers.enable({ apis: ['Date'], now: Date.now() });
    try {
      const idp = trustedIssuer(issuer);
      assert.equal((await idp.verify(known, expected)).ok, true);
      mock.timers.tick(31_000);
      keysUp = false;
      hits.length = 0;
      const refetched = await idp.verify(stranger, expected);
      assert.equal(!refetched.ok && refetched.status, 503, 'a key id that could not be looked up is the provider’s failure');
      assert.deepEqual(hits, ['/f/jwks']);
      assert.equal((await idp.verify(known, expected)).ok, true, 'the fresh keys in hand still judge tokens of their keys');
      assert.equal(((await idp.verify(stranger, expected)) as { status?: number }).status, 503);
      assert.deepEqual(hits, ['/f/jwks'], 'nothing fetched again within the cooldown');
    } finally {
      mock.timers.reset();
    }
  });

  test('a signed token whose subject is not a non-empty string (null, a number, a list, an object, empty) or holds a control character (NUL, which PostgreSQL cannot store) is refused 401 invalid_token, never thrown', async () => {
    const issuer = `${origin}/e`;
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    routes = {
      '/.well-known/oauth-authorization-server/e': json({ issuer, jwks_uri: `${origin}/e/jwks` }),
      '/e/jwks': json({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }] }),
    };
    const idp = trustedIssuer(issuer);
    for (const sub of [null, 123, ['agent'], { id: 'agent' }, '', 'agent\u0000', 'agent\n']) {
      const jwt = await new SignJWT({ sub, iss: issuer, aud: expected.audience } as never)
        .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
        .setExpirationTime('5m')
        .sign(privateKey);
      const check = await idp.verify(jwt, expected);
      assert.equal(check.ok, false, `sub ${JSON.stringify(sub)} was taken`);
      assert.equal(!check.ok && check.status, 401);
      assert.equal(!check.ok && check.error, 'invalid_token');
    }
  });
});
