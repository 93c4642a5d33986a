import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Agent, type Dispatcher } from 'undici';
import { ConfigError } from '../../src/config/errors.js';
import { loadConfig } from '../../src/config/load.js';
import { trustedProxiesOf } from '../../src/config/schema.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { useSandbox } from '../helpers/chain.js';
import { type CountAnswer, callCount, countPayment, startCounterUpstream } from '../helpers/counter-upstream.js';
import { serveOnSandbox } from '../helpers/served.js';

const chain = useSandbox({ isolate: false });
let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;
let served: Awaited<ReturnType<typeof serveOnSandbox>>;
// The proxy turnpike trusts is at 127.0.0.1; 127.0.0.2 is a caller that reaches turnpike directly (Linux answers all of 127/8).
const direct = new Agent({ localAddress: '127.0.0.2' });

/** A `count` call at the paid server, as a caller behind the proxy (`forwardedFor`) or from another socket (`from`). */
const call = (payment?: unknown, options: { forwardedFor?: string; from?: Dispatcher } = {}) =>
  callCount(`${served.url}/mcp/paid`, payment, {
    ...(options.from ? { dispatcher: options.from } : {}),
    ...(options.forwardedFor ? { headers: { 'x-forwarded-for': options.forwardedFor } } : {}),
  });

async function paidCall(payerIndex: number, forwardedFor: string) {
  const payment = await countPayment(`${served.url}/mcp/paid`, chain.sandbox.accounts.payers[payerIndex]!);
  const answer = await call(payment, { forwardedFor });
  assert.equal((answer.result?._meta?.['x402/payment-response'] as { success: boolean }).success, true, JSON.stringify(answer));
  return { payment, answer };
}

const used = (answer: CountAnswer) => answer.result?.isError === true && /nonce_already_used/.test(JSON.stringify(answer));

describe('trusted proxies: the caller behind a proxy turnpike is told to trust', () => {
  before(async () => {
    upstream = await startCounterUpstream();
    served = await serveOnSandbox(chain, {
      overrides: { http: { port: 0, trustedProxies: '127.0.0.1' } },
      secrets: {},
      endpoints: [
        {
          slug: 'paid',
          path: '/mcp/paid',
          upstream: { url: `${upstream.url}/mcp`, headers: {}, timeoutMs: 10_000 },
          plan: flatPlan(priceTableSchema.parse({ default: '0.02' })),
          payTo: chain.sandbox.accounts.payees[1]!.address,
          challenge: 'tool-result',
        },
      ],
    });
  });
  after(async () => {
    await served?.gateway.close();
    await upstream?.close();
    await direct.close();
  });

  test('two callers behind one trusted proxy are two networks: a lost paid answer goes back only to the one who paid', async () => {
    const { payment, answer } = await paidCall(5, '203.0.113.7');
    assert.ok(used(await call(payment, { forwardedFor: '198.51.100.9' })), 'another caller behind the proxy: the payment is used');
    assert.ok(used(await call(payment)), 'the proxy itself, naming no caller: the payment is used');
    assert.deepEqual((await call(payment, { forwardedFor: '203.0.113.7' })).result, answer.result, 'the payer, again through the proxy');
  });

  test('a caller that is not a trusted proxy cannot name itself in X-Forwarded-For', async () => {
    const { payment } = await paidCall(6, '203.0.113.8');
    assert.ok(used(await call(payment, { forwardedFor: '203.0.113.8', from: direct })), 'the header of an untrusted peer is not read');
  });

  test('http.trustedProxies is a comma-separated list of addresses, CIDRs or proxy-addr names; anything else is refused when read', () => {
    const config = loadConfig({ env: { TURNPIKE_HTTP_TRUSTED_PROXIES: 'loopback, 10.0.0.0/8,fd00::1' } });
    assert.deepEqual(trustedProxiesOf(config), ['loopback', '10.0.0.0/8', 'fd00::1']);
    assert.deepEqual(trustedProxiesOf(loadConfig({ env: {} })), [], 'none by default');
    assert.throws(
      () => loadConfig({ env: { TURNPIKE_HTTP_TRUSTED_PROXIES: '10.0.0.300' } }),
      (error: unknown) =>
        error instanceof ConfigError &&
        /http\.trustedProxies/.test(error.message) &&
        /invalid IP address: 10\.0\.0\.300/.test(error.message),
    );
  });
});
