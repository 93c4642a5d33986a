import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { ConfigError } from '../../src/config/errors.js';
import { FacilitatorUnavailableError } from '../../src/facilitator/errors.js';
import { cdpFacilitator, remoteFacilitator } from '../../src/facilitator/remote.js';
import { createApp } from '../../src/http/app.js';
import { facilitatorRoutes } from '../../src/http/facilitator-routes.js';
import { type Listening, listen } from '../../src/http/listen.js';
import { createLogger } from '../../src/log/logger.js';
import { useSandbox } from '../helpers/chain.js';
import { v2Request } from '../helpers/payments.js';

const chain = useSandbox({ isolate: false });

describe('remote facilitator (official HTTPFacilitatorClient)', () => {
  let server: Listening;
  before(async () => {
    const logger = createLogger({ level: 'silent', format: 'json' });
    const { facilitator } = await chain.facilitator([2]);
    const app = createApp(logger);
    app.route('/', facilitatorRoutes(facilitator, { bodyLimitBytes: 65536, logger }));
    server = await listen(app, { host: '127.0.0.1', port: 0 });
  });
  after(() => server.close());

  test('verifies and settles through a facilitator URL (here turnpike’s own)', async () => {
    const remote = remoteFacilitator({ url: server.url });
    const payer = chain.sandbox.accounts.payers[8]!;
    const payTo = chain.sandbox.accounts.payees[1]!.address;
    const body = await v2Request({ payer, payTo, amount: 123n });
    assert.deepEqual(await remote.verify(body), { isValid: true, payer: payer.address });
    const before = await chain.balanceOf(payTo);
    const settled = await remote.settle(body);
    assert.equal(settled.success, true);
    assert.equal(await chain.balanceOf(payTo), before + 123n);
    const again = await remote.verify(body);
    assert.equal(again.isValid, false);
  });

  test('an unreachable facilitator is FacilitatorUnavailableError', async () => {
    const remote = remoteFacilitator({ url: 'http://127.0.0.1:9', timeoutMs: 2000 });
    const body = await v2Request({ payer: chain.sandbox.accounts.payers[8]!, payTo: chain.sandbox.accounts.payees[1]!.address, amount: 1n });
    await assert.rejects(remote.verify(body), FacilitatorUnavailableError);
  });
});

describe('hosted CDP facilitator wiring (the service itself is not reachable offline)', () => {
  test('without CDP_API_KEY_ID / CDP_API_KEY_SECRET it says which variables to set', () => {
    assert.throws(() => cdpFacilitator({}), (e: unknown) => e instanceof ConfigError && /CDP_API_KEY_ID/.test(e.format()));
  });

  test('with a key, calls go to the CDP x402 endpoint with a signed bearer JWT', async () => {
    const pem = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const remote = cdpFacilitator({ cdpApiKeyId: 'organizations/test/apiKeys/test', cdpApiKeySecret: pem });
    const seen: { url: string; authorization: string | null }[] = [];
    const realFetch = globalThis.fetch;
    // The one stand-in in this suite: Coinbase's API cannot run here, so the request is captured.
    globalThis.fetch = async (input: string | URL | Request, init?: RequestInit) => {
      seen.push({ url: String(input), authorization: new Headers(init?.headers).get('authorization') });
      return new Response(JSON.stringify({ isValid: false, invalidReason: 'invalid_payload' }), {
        headers: { 'content-type': 'application/json' },
      });
    };
    try {
      const body = await v2Request({ payer: chain.sandbox.accounts.payers[8]!, payTo: chain.sandbox.accounts.payees[1]!.address, amount: 1n });
      assert.deepEqual(await remote.verify(body), { isValid: false, invalidReason: 'invalid_payload' });
    } finally {
      globalThis.fetch = realFetch;
    }
    assert.equal(seen.length, 1);
    assert.equal(seen[0]!.url, 'https://api.cdp.coinbase.com/platform/v2/x402/verify');
    const jwt = /^Bearer ([\w-]+)\.([\w-]+)\.([\w-]+)$/.exec(seen[0]!.authorization ?? '');
    assert.ok(jwt, `expected a bearer JWT, got ${seen[0]!.authorization}`);
    const claims = JSON.parse(Buffer.from(jwt[2]!, 'base64url').toString());
    assert.equal(claims.sub, 'organizations/test/apiKeys/test');
    assert.match(JSON.stringify(claims), /POST api\.cdp\.coinbase\.com\/platform\/v2\/x402\/verify/);
  });
});
