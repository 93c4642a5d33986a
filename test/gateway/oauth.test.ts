import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';
import { type OAuthClientProvider, UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import type { OAuthClientInformationMixed, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { x402Client } from '@x402/core/client';
import type { PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { type JWTPayload, SignJWT, base64url, generateKeyPair, importJWK } from 'jose';
import { flatPlan } from '../../src/pricing/plans.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import type { EndpointOptions } from '../../src/app/gateway-server.js';
import { CREDITS_META_KEY } from '../../src/rails/credits/rail.js';
import { useSandbox } from '../helpers/chain.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { OIDC_CLIENT, signIn, startOidcProvider } from '../helpers/oidc.js';
import { serveOnSandbox } from '../helpers/served.js';
import { postToolCall } from '../helpers/gateway.js';

const chain = useSandbox({ isolate: false });
const ADMIN = 'admin-key-for-tests-0123456789abcdef';
let idp: Awaited<ReturnType<typeof startOidcProvider>>;
let rogue: Awaited<ReturnType<typeof startOidcProvider>>;
let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;
let served: Awaited<ReturnType<typeof serveOnSandbox>>;
const url = (slug: string) => `${served.url}/mcp/${slug}`;

/** A raw tools/call of the counter's priced `count` tool at `/mcp/<slug>`. */
async function call(slug: string, headers: Record<string, string> = {}) {
  const res = await postToolCall(url(slug), 'count', headers);
  return { status: res.status, challenge: res.headers.get('www-authenticate'), body: (await res.json()) as Record<string, any> };
}
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** A token the provider's own key signs, with claims a test chooses (what the provider would issue, or not). */
async function forged(claims: JWTPayload, header: { kid?: string; typ?: string | undefined } = {}) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sub: OIDC_CLIENT.id, scope: 'mcp:tools', iat: now, exp: now + 300, iss: idp.issuer, aud: url('alpha'), ...claims })
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: idp.privateJwk.kid!, ...header })
    .sign(await importJWK(idp.privateJwk, 'ES256'));
}

async function newKey(usd: string) {
  const created = await served.api('POST', '/admin/keys', { key: ADMIN, body: { name: 'org', usd } });
  assert.equal(created.status, 201);
  return created.body as { id: string; key: string };
}
const link = (keyId: string, subject: { issuer: string; subject: string }) =>
  served.api('POST', `/admin/keys/${keyId}/subjects`, { key: ADMIN, body: subject });
const balance = async (keyId: string) => (await served.api('GET', `/admin/keys/${keyId}`, { key: ADMIN })).body.balance as string;

describe('callers with OAuth access tokens (MCP authorization)', () => {
  before(async () => {
    [idp, rogue, upstream] = await Promise.all([startOidcProvider({ signIn: true }), startOidcProvider(), startCounterUpstream()]);
    const endpoint = (slug: string, oauth: EndpointOptions['oauth']): EndpointOptions => ({
      slug,
      path: `/mcp/${slug}`,
      upstream: { url: `${upstream.url}/mcp`, headers: {}, timeoutMs: 10_000 },
      plan: flatPlan(priceTableSchema.parse({ default: '0.02' })),
      payTo: chain.sandbox.accounts.payees[1]!.address,
      challenge: 'tool-result',
      ...(oauth ? { oauth } : {}),
    });
    served = await serveOnSandbox(chain, {
      // The identity provider and the upstream of the registered server are on loopback.
      overrides: { operators: { allowPrivateUpstreams: true } },
      secrets: { adminKey: ADMIN },
      endpoints: [
        endpoint('alpha', { issuer: idp.issuer, scopes: ['mcp:tools'], required: true }),
        endpoint('beta', { issuer: idp.issuer, scopes: [], required: false }),
        // An identity provider that cannot be reached: nothing listens on port 1.
        endpoint('gamma', { issuer: 'http://127.0.0.1:1', scopes: [], required: true }),
      ],
    });
  });
  after(async () => {
    await served?.gateway.close();
    await Promise.all([idp?.close(), rogue?.close(), upstream?.close()]);
  });

  test('a request without a token is answered 401 with WWW-Authenticate naming the server’s RFC 9728 metadata, which names the issuer', async () => {
    const runs = upstream.runs();
    const refused = await call('alpha');
    assert.equal(refused.status, 401);
    const metadataUrl = `${served.url}/.well-known/oauth-protected-resource/mcp/alpha`;
    assert.equal(refused.challenge, `Bearer resource_metadata="${metadataUrl}", scope="mcp:tools"`);
    assert.equal(refused.body.error.data.error, 'unauthorized');
    assert.equal(upstream.runs(), runs);

    const metadata = await served.api('GET', '/.well-known/oauth-protected-resource/mcp/alpha');
    assert.equal(metadata.status, 200);
    assert.deepEqual(metadata.body, {
      resource: url('alpha'),
      authorization_servers: [idp.issuer],
      scopes_supported: ['mcp:tools'],
      bearer_methods_supported: ['header'],
    });
    assert.equal((await served.api('GET', '/.well-known/oauth-protected-resource/mcp/nothing')).status, 404);
    assert.equal((await served.api('GET', '/.well-known/oauth-protected-resource')).status, 404);
  });

  test('the MCP SDK client signs in by itself (client_credentials, found through the 401), and the key its subject is linked to pays for its calls', async () => {
    const client = new Client({ name: 'agent', version: '1.0.0' });
    const authProvider = new ClientCredentialsProvider({
      clientId: OIDC_CLIENT.id,
      clientSecret: OIDC_CLIENT.secret,
      scope: 'mcp:tools',
      expectedIssuer: idp.issuer,
    });
    await client.connect(new StreamableHTTPClientTransport(new URL(url('alpha')), { authProvider }));
    try {
      assert.ok(authProvider.tokens()?.access_token, 'the SDK got a token from the provider');
      const runs = upstream.runs();
      // Signed in, but no account pays for this subject yet: the x402 challenge, saying so.
      const unlinked = await client.callTool({ name: 'count', arguments: {} });
      assert.equal(unlinked.isError, true);
      assert.match((unlinked.structuredContent as PaymentRequired).error!, /^subject_unlinked: /);
      assert.equal(upstream.runs(), runs);

      const key = await newKey('1');
      assert.equal((await link(key.id, { issuer: idp.issuer, subject: OIDC_CLIENT.id })).status, 201);
      const result = await client.callTool({ name: 'count', arguments: {} });
      assert.equal(result.isError, undefined);
      assert.equal(upstream.runs(), runs + 1);
      const receipt = (result._meta as Record<string, Record<string, string>>)[CREDITS_META_KEY]!;
      assert.equal(receipt.charged, '20000');
      assert.equal(await balance(key.id), '980000');
    } finally {
      await client.close();
    }
  });

  test('an OAuth caller whose subject is unlinked or whose key is short pays with x402 in the same request: the token says who, the payment pays (USDC moves once, no credits charged)', async () => {
    const payee = chain.sandbox.accounts.payees[1]!.address;
    const payer = new x402Client().register('eip155:8453', new ExactEvmScheme(chain.sandbox.accounts.payers[5]!));
    const short = await newKey('0.01');
    await link(short.id, { issuer: idp.issuer, subject: 'short' });
    for (const [subject, why] of [
      ['walk-in', /^subject_unlinked: no credits account pays for subject walk-in/],
      ['short', /^insufficient_balance: /],
    ] as const) {
      const authorization = `Bearer ${await forged({ sub: subject })}`;
      const client = new Client({ name: subject, version: '1.0.0' });
      await client.connect(new StreamableHTTPClientTransport(new URL(url('alpha')), { requestInit: { headers: { authorization } } }));
      try {
        const runs = upstream.runs();
        const challenged = await client.callTool({ name: 'count', arguments: {} });
        assert.equal(challenged.isError, true, subject);
        const required = challenged.structuredContent as PaymentRequired;
        assert.match(required.error!, why);
        assert.equal(required.accepts[0]!.amount, '20000');
        assert.equal(upstream.runs(), runs);

        const before = await chain.balanceOf(payee);
        const payment = await payer.createPaymentPayload(required);
        const paid = await client.callTool({ name: 'count', arguments: {}, _meta: { 'x402/payment': payment } });
        assert.equal(paid.isError, undefined, JSON.stringify(paid));
        assert.equal((paid._meta?.['x402/payment-response'] as { success: boolean }).success, true);
        assert.equal((paid._meta as Record<string, unknown>)[CREDITS_META_KEY], undefined, 'no credits receipt');
        assert.equal(upstream.runs(), runs + 1);
        assert.equal(await chain.balanceOf(payee), before + 20000n);
        // The same payment again runs nothing and moves nothing more.
        await client.callTool({ name: 'count', arguments: {}, _meta: { 'x402/payment': payment } });
        assert.equal(upstream.runs(), runs + 1);
        assert.equal(await chain.balanceOf(payee), before + 20000n);
      } finally {
        await client.close();
      }
    }
    assert.equal(await balance(short.id), '10000', 'the short key was charged nothing');
  });

  test('a person signs in through the MCP SDK client’s authorization-code flow (401, RFC 9728, provider metadata, dynamic registration, PKCE, login and consent, code exchange), and the key their subject is linked to pays', async () => {
    /** What an MCP host keeps for one server: its registration, the PKCE verifier, the tokens; the sign-in page it would open. */
    class Host implements OAuthClientProvider {
      readonly redirectUrl = 'http://127.0.0.1:9/callback';
      readonly clientMetadata = {
        client_name: 'an MCP host',
        redirect_uris: [this.redirectUrl],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      };
      client?: OAuthClientInformationMixed;
      saved?: OAuthTokens;
      verifier = '';
      opened?: URL;
      clientInformation = () => this.client;
      saveClientInformation = (client: OAuthClientInformationMixed) => void (this.client = client);
      tokens = () => this.saved;
      saveTokens = (tokens: OAuthTokens) => void (this.saved = tokens);
      redirectToAuthorization = (url: URL) => void (this.opened = url);
      saveCodeVerifier = (verifier: string) => void (this.verifier = verifier);
      codeVerifier = () => this.verifier;
    }
    const host = new Host();
    const registrations = idp.requests('/reg');
    const first = new StreamableHTTPClientTransport(new URL(url('alpha')), { authProvider: host });
    await assert.rejects(new Client({ name: 'host', version: '1.0.0' }).connect(first), UnauthorizedError);
    assert.equal(idp.requests('/reg'), registrations + 1, 'the SDK registered itself with the provider');
    const opened = host.opened!;
    assert.equal(opened.origin, idp.issuer);
    assert.equal(opened.searchParams.get('resource'), url('alpha'));
    assert.equal(opened.searchParams.get('scope'), 'mcp:tools');
    assert.equal(opened.searchParams.get('code_challenge_method'), 'S256');

    const code = await signIn(opened, 'person-with-a-browser', host.redirectUrl);
    await first.finishAuth(code);
    const claims = JSON.parse(Buffer.from(host.saved!.access_token.split('.')[1]!, 'base64url').toString()) as JWTPayload;
    assert.equal(claims.sub, 'person-with-a-browser');
    assert.equal(claims.aud, url('alpha'));

    const key = await newKey('1');
    assert.equal((await link(key.id, { issuer: idp.issuer, subject: 'person-with-a-browser' })).status, 201);
    const client = new Client({ name: 'host', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(url('alpha')), { authProvider: host }));
    try {
      const runs = upstream.runs();
      const result = await client.callTool({ name: 'count', arguments: {} });
      assert.equal(result.isError, undefined, JSON.stringify(result));
      assert.equal(upstream.runs(), runs + 1);
      assert.equal((result._meta as Record<string, Record<string, string>>)[CREDITS_META_KEY]!.charged, '20000');
      assert.equal(await balance(key.id), '980000');
    } finally {
      await client.close();
    }
  });

  test('tokens an attacker brings are refused 401 invalid_token and nothing runs or is charged: another server’s, another audience, expired, another issuer, alg none, HS256 keyed with the public key, an unknown kid', async () => {
    const key = await newKey('1');
    await link(key.id, { issuer: idp.issuer, subject: 'attacker' });
    // The forging works: the same token, unexpired, for this server, is taken.
    assert.equal((await call('alpha', bearer(await forged({ sub: 'attacker' })))).status, 200);
    const before = { runs: upstream.runs(), balance: await balance(key.id) };

    const now = Math.floor(Date.now() / 1000);
    const publicPem = createPublicKey({ key: { ...idp.privateJwk, d: undefined }, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
    const { privateKey: strangerKey } = await generateKeyPair('ES256');
    const claims = { sub: 'attacker', iss: idp.issuer, aud: url('alpha'), scope: 'mcp:tools', iat: now, exp: now + 300 };
    const attacks: [string, string, RegExp][] = [
      ['a token the provider issued for server beta', await idp.token(url('beta')), /another resource/],
      ['a token for another audience', await idp.token('https://elsewhere.example/mcp'), /another resource/],
      ['an expired token', await forged({ sub: 'attacker', iat: now - 900, exp: now - 600 }), /expired/],
      ['a token another identity provider issued for this server', await rogue.token(url('alpha')), /signature does not verify/],
      ['a token naming another issuer', await forged({ sub: 'attacker', iss: rogue.issuer }), /another identity provider/],
      [
        'alg none',
        `${base64url.encode(JSON.stringify({ alg: 'none', typ: 'at+jwt' }))}.${base64url.encode(JSON.stringify(claims))}.`,
        /algorithm|signed JWT/,
      ],
      [
        'HS256 keyed with the provider’s public key',
        await new SignJWT(claims)
          .setProtectedHeader({ alg: 'HS256', kid: idp.privateJwk.kid! })
          .sign(new TextEncoder().encode(publicPem as string)),
        /algorithm/,
      ],
      [
        'a kid the provider does not have',
        await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'stranger' }).sign(strangerKey),
        /no key/,
      ],
    ];
    const rogueFetches = () =>
      rogue.requests('/jwks') +
      rogue.requests('/.well-known/openid-configuration') +
      rogue.requests('/.well-known/oauth-authorization-server');
    const rogueBefore = rogueFetches();
    for (const [what, token, why] of attacks) {
      const refused = await call('alpha', bearer(token));
      assert.equal(refused.status, 401, what);
      assert.match(refused.challenge ?? '', /^Bearer error="invalid_token", error_description="[^"]+", resource_metadata="/, what);
      assert.match(refused.body.error.message, why, what);
    }
    assert.equal(upstream.runs(), before.runs);
    assert.equal(await balance(key.id), before.balance);
    // A token naming another issuer made turnpike fetch nothing from it.
    assert.equal(rogueFetches(), rogueBefore);
    const metrics = (await served.api('GET', '/metrics', { key: ADMIN })).text;
    assert.match(metrics, /turnpike_payment_denials_total\{server="alpha",reason="oauth_invalid_token"\} ([8-9]|\d\d)/);
  });

  test('a token typed as an access token (at+jwt, application/at+jwt, JWT or no typ) is taken; one typed as anything else (a DPoP proof, a logout or security event token) is 401 invalid_token naming its type', async () => {
    const key = await newKey('1');
    await link(key.id, { issuer: idp.issuer, subject: 'typed' });
    for (const typ of ['at+jwt', 'application/at+jwt', 'JWT', 'jwt', undefined]) {
      const taken = await call('alpha', bearer(await forged({ sub: 'typed' }, { typ })));
      assert.equal(taken.status, 200, `typ ${typ}`);
      assert.equal(taken.body.result._meta[CREDITS_META_KEY].charged, '20000', `typ ${typ}`);
    }
    const before = { runs: upstream.runs(), balance: await balance(key.id) };
    for (const typ of ['dpop+jwt', 'secevent+jwt', 'logout+jwt', 'application/id_token+jwt', 'JOSE', 'at+jwt; x']) {
      const refused = await call('alpha', bearer(await forged({ sub: 'typed' }, { typ })));
      assert.equal(refused.status, 401, `typ ${typ}`);
      assert.match(
        refused.challenge ?? '',
        /^Bearer error="invalid_token", error_description="the token type \(typ [^"]*\) is not an access token/,
      );
      assert.match(refused.body.error.message, /is not an access token: at\+jwt, JWT or none are taken/, `typ ${typ}`);
    }
    assert.equal(upstream.runs(), before.runs);
    assert.equal(await balance(key.id), before.balance);
  });

  test('tokens with unknown key ids make turnpike fetch the issuer’s keys at most once per cooldown, however many come', async () => {
    const before = idp.requests('/jwks');
    const now = Math.floor(Date.now() / 1000);
    for (let i = 0; i < 5; i++) {
      const { privateKey } = await generateKeyPair('ES256');
      const token = await new SignJWT({ sub: 'attacker', iss: idp.issuer, aud: url('alpha'), iat: now, exp: now + 300 })
        .setProtectedHeader({ alg: 'ES256', kid: `stranger-${i}` })
        .sign(privateKey);
      assert.equal((await call('alpha', bearer(token))).status, 401);
    }
    assert.ok(idp.requests('/jwks') - before <= 1, `fetched the key set ${idp.requests('/jwks') - before} times`);
  });

  test('a token without the required scope is answered 403 insufficient_scope naming the scope to ask for', async () => {
    const runs = upstream.runs();
    const refused = await call('alpha', bearer(await idp.token(url('alpha'), 'other')));
    assert.equal(refused.status, 403);
    assert.match(
      refused.challenge ?? '',
      /^Bearer error="insufficient_scope", error_description="the token lacks scope mcp:tools", resource_metadata="[^"]+", scope="mcp:tools"$/,
    );
    assert.equal(upstream.runs(), runs);
  });

  test('a server with tokens optional still challenges x402 payers and takes API keys without a token, and still refuses a bad token', async () => {
    const challenged = await call('beta');
    assert.equal(challenged.status, 200);
    assert.equal(challenged.body.result.isError, true);
    assert.ok(challenged.body.result.structuredContent.accepts.length > 0, 'an x402 offer');

    const key = await newKey('1');
    const paid = await call('beta', bearer(key.key));
    assert.equal(paid.status, 200);
    assert.equal(paid.body.result._meta[CREDITS_META_KEY].charged, '20000');

    const refused = await call('beta', bearer(await idp.token(url('alpha'))));
    assert.equal(refused.status, 401);
    assert.match(refused.challenge ?? '', /error="invalid_token"/);
    // A server that requires tokens takes no API key in their place.
    assert.equal((await call('alpha', bearer(key.key))).status, 401);
  });

  test('an identity provider that cannot be reached is a 503 to retry, not a refused token', async () => {
    const token = await forged({ iss: 'http://127.0.0.1:1', aud: url('gamma') });
    const answer = await call('gamma', bearer(token));
    assert.equal(answer.status, 503);
    assert.equal(answer.body.error.data.error, 'issuer_unavailable');
  });

  test('a server registered through the operator API takes OAuth callers too, and stops when its oauth is removed', async () => {
    const operator = await served.api('POST', '/admin/operators', { key: ADMIN, body: { email: 'op@example.com', name: 'op' } });
    const opKey = operator.body.key as string;
    const body = {
      slug: 'delta',
      name: 'delta',
      upstream: `${upstream.url}/mcp`,
      payTo: chain.sandbox.accounts.payees[1]!.address,
      plan: { type: 'per_call', default: '0.02' },
      oauth: { issuer: idp.issuer, scopes: ['mcp:tools'] },
    };
    const created = await served.api('POST', '/operator/servers', { key: opKey, body });
    assert.equal(created.status, 201, created.text);
    assert.deepEqual(created.body.oauth, { issuer: idp.issuer, scopes: ['mcp:tools'], required: true });

    const refused = await call('delta');
    assert.equal(refused.status, 401);
    assert.match(refused.challenge ?? '', /resource_metadata="[^"]+\/\.well-known\/oauth-protected-resource\/mcp\/delta"/);
    const metadata = await served.api('GET', '/.well-known/oauth-protected-resource/mcp/delta');
    assert.equal(metadata.body.resource, url('delta'));
    assert.deepEqual(metadata.body.authorization_servers, [idp.issuer]);

    const key = await newKey('1');
    assert.equal((await link(key.id, { issuer: idp.issuer, subject: 'delta-user' })).status, 201);
    assert.equal((await call('delta', bearer(await forged({ sub: 'delta-user', aud: url('alpha') })))).status, 401);
    const paid = await call('delta', bearer(await forged({ sub: 'delta-user', aud: url('delta') })));
    assert.equal(paid.status, 200);
    assert.equal(paid.body.result._meta[CREDITS_META_KEY].charged, '20000');

    assert.equal((await served.api('PATCH', '/operator/servers/delta', { key: opKey, body: { oauth: null } })).status, 200);
    const open = await call('delta');
    assert.equal(open.status, 200);
    assert.equal(open.body.result.isError, true, 'the x402 challenge again');
    assert.equal((await served.api('GET', '/.well-known/oauth-protected-resource/mcp/delta')).status, 404);
  });

  test('operators sharing one identity provider each link its subjects to their own keys: a link pays only on its operator’s servers, and another operator can neither use nor touch it', async () => {
    /** An operator with a server at `slug` that takes the shared provider's tokens, and a funded key of theirs. */
    async function operatorWithServer(name: string, slug: string) {
      const created = await served.api('POST', '/admin/operators', { key: ADMIN, body: { email: `${name}@example.com`, name } });
      const opKey = created.body.key as string;
      const server = await served.api('POST', '/operator/servers', {
        key: opKey,
        body: {
          slug,
          name: slug,
          upstream: `${upstream.url}/mcp`,
          payTo: chain.sandbox.accounts.payees[1]!.address,
          plan: { type: 'per_call', default: '0.02' },
          oauth: { issuer: idp.issuer },
        },
      });
      assert.equal(server.status, 201, server.text);
      const key = await served.api('POST', '/operator/keys', { key: opKey, body: { name: `${name}'s customer` } });
      assert.equal(key.status, 201, key.text);
      const topup = { usd: '1', idempotencyKey: `fund-${name}` };
      assert.equal((await served.api('POST', `/admin/keys/${key.body.id}/topup`, { key: ADMIN, body: topup })).status, 201);
      return { opKey, keyId: key.body.id as string };
    }
    const alice = await operatorWithServer('alice', 'alice-search');
    const bob = await operatorWithServer('bob', 'bob-search');
    const shared = { issuer: idp.issuer, subject: 'shared-person' };
    const opLink = (op: { opKey: string }, keyId: string, subject = shared) =>
      served.api('POST', `/operator/keys/${keyId}/subjects`, { key: op.opKey, body: subject });
    const tokenFor = async (slug: string) => bearer(await forged({ sub: shared.subject, aud: url(slug) }));

    assert.equal((await opLink(alice, alice.keyId)).status, 201);
    const listed = await served.api('GET', `/operator/keys/${alice.keyId}/subjects`, { key: alice.opKey });
    assert.deepEqual(
      listed.body.subjects.map((s: { subject: string }) => s.subject),
      [shared.subject],
    );
    // Bob cannot link a subject to Alice's key, list its subjects or unlink them: for him it does not exist.
    const stolen = await opLink(bob, alice.keyId, { issuer: idp.issuer, subject: 'bobs-agent' });
    assert.equal(stolen.status, 404);
    assert.equal(stolen.body.error, 'key_not_found');
    assert.equal((await served.api('GET', `/operator/keys/${alice.keyId}/subjects`, { key: bob.opKey })).status, 404);
    const query = new URLSearchParams(shared).toString();
    assert.equal((await served.api('DELETE', `/operator/keys/${alice.keyId}/subjects?${query}`, { key: bob.opKey })).status, 404);
    // Nor link for an issuer none of his servers names.
    const foreignIssuer = await opLink(bob, bob.keyId, { issuer: rogue.issuer, subject: 'x' });
    assert.equal(foreignIssuer.status, 400);
    assert.equal(foreignIssuer.body.error, 'issuer_unknown');

    // Alice's subject on Bob's server: unlinked there, and Alice's key pays nothing, nor does the tool run.
    const before = { runs: upstream.runs(), alice: await balance(alice.keyId), bob: await balance(bob.keyId) };
    const onBobs = await call('bob-search', await tokenFor('bob-search'));
    assert.match(JSON.stringify(onBobs.body), /subject_unlinked/);
    assert.equal(upstream.runs(), before.runs);
    assert.equal(await balance(alice.keyId), before.alice);
    const onAlices = await call('alice-search', await tokenFor('alice-search'));
    assert.equal(onAlices.body.result._meta[CREDITS_META_KEY].charged, '20000');
    assert.equal(await balance(alice.keyId), '980000');

    // Bob links the same subject to his own key: his link pays on his servers, Alice's on hers.
    assert.equal((await opLink(bob, bob.keyId)).status, 201);
    assert.equal((await call('bob-search', await tokenFor('bob-search'))).body.result._meta[CREDITS_META_KEY].charged, '20000');
    assert.equal(await balance(bob.keyId), '980000');
    assert.equal(await balance(alice.keyId), '980000');
    const audit = await served.api('GET', '/operator/audit', { key: bob.opKey });
    assert.ok(audit.body.entries.some((e: { action: string; target: string }) => e.action === 'subject.link' && e.target === bob.keyId));
    assert.equal((await served.api('DELETE', `/operator/keys/${bob.keyId}/subjects?${query}`, { key: bob.opKey })).status, 200);
    assert.match(JSON.stringify((await call('bob-search', await tokenFor('bob-search'))).body), /subject_unlinked/);
    assert.equal(await balance(bob.keyId), '980000');
  });

  test('the admin links a subject to one key only, for an issuer a server names and a subject a token can carry, and can unlink it', async () => {
    const [first, second] = [await newKey('1'), await newKey('1')];
    const subject = { issuer: idp.issuer, subject: 'person-1' };
    assert.equal((await link(first.id, subject)).status, 201);
    assert.equal((await link(first.id, subject)).status, 200);
    const taken = await link(second.id, subject);
    assert.equal(taken.status, 409);
    assert.equal(taken.body.error, 'subject_linked');
    // A subject no token can carry (a NUL, which PostgreSQL cannot store) is the admin's mistake, named, not a 500.
    const unstorable = await link(first.id, { issuer: idp.issuer, subject: 'person\u0000' });
    assert.equal(unstorable.status, 400);
    assert.match(unstorable.text, /control character|NUL character/);
    const unlinkUnstorable = new URLSearchParams({ issuer: `${idp.issuer}\u0000`, subject: 'person-1' }).toString();
    const unlinked = await served.api('DELETE', `/admin/keys/${first.id}/subjects?${unlinkUnstorable}`, { key: ADMIN });
    assert.equal(unlinked.status, 400);
    assert.match(unlinked.text, /control character|NUL character/);
    const unknown = await link(first.id, { issuer: 'https://id.example.com', subject: 'x' });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.body.error, 'issuer_unknown');
    const listed = await served.api('GET', `/admin/keys/${first.id}/subjects`, { key: ADMIN });
    assert.deepEqual(
      listed.body.subjects.map((s: { subject: string }) => s.subject),
      ['person-1'],
    );
    const query = new URLSearchParams(subject).toString();
    assert.equal((await served.api('DELETE', `/admin/keys/${second.id}/subjects?${query}`, { key: ADMIN })).status, 404);
    assert.equal((await served.api('DELETE', `/admin/keys/${first.id}/subjects?${query}`, { key: ADMIN })).status, 200);
    assert.equal((await link(second.id, subject)).status, 201);
  });
});
