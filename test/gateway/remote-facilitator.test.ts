import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { x402Client } from '@x402/core/client';
import type { PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { wrapFetchWithPaymentFromConfig } from '@x402/fetch';
import type { ConfigInput } from '../../src/config/schema.js';
import type { Secrets } from '../../src/config/secrets.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import { useSandbox } from '../helpers/chain.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { facilitatorOverHttp } from '../helpers/facilitator-api.js';
import { signAuthorization } from '../helpers/payments.js';
import { serveOnSandbox } from '../helpers/served.js';

const chain = useSandbox({ isolate: false });
const KEY = 'gateway-to-facilitator-key-0123456789abcdef';
let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;
let remote: Awaited<ReturnType<typeof facilitatorOverHttp>>;
const closing: (() => Promise<unknown>)[] = [];

const payee = () => chain.sandbox.accounts.payees[1]!.address;

/** `turnpike wrap` of the counter upstream at 0.01 USDC a call, with `facilitator` settings (and credits off unless told). */
async function wrap(facilitator: ConfigInput['facilitator'], secrets: Secrets, credits: ConfigInput['credits'] = { enabled: false }) {
  const served = await serveOnSandbox(chain, {
    overrides: { facilitator, credits },
    secrets,
    endpoints: [
      {
        slug: 'default',
        path: '/mcp',
        upstream: { url: `${upstream.url}/mcp`, headers: {}, timeoutMs: 10_000 },
        plan: flatPlan(priceTableSchema.parse({ default: '0.01' })),
        payTo: payee(),
        challenge: 'tool-result',
      },
    ],
  });
  closing.push(() => served.gateway.close());
  const client = new Client({ name: 'paying-agent', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(`${served.url}/mcp`)));
  closing.push(() => client.close());
  /** The challenge of `tool`, paid by sandbox payer `n` through the official x402 client. */
  const payFor = async (tool: string, n: number) => {
    const challenged = await client.callTool({ name: tool, arguments: {} });
    assert.equal(challenged.isError, true);
    const required = challenged.structuredContent as unknown as PaymentRequired;
    return new x402Client().register('eip155:8453', new ExactEvmScheme(chain.sandbox.accounts.payers[n]!)).createPaymentPayload(required);
  };
  const paid = (tool: string, payment: unknown) => client.callTool({ name: tool, arguments: {}, _meta: { 'x402/payment': payment } });
  return { ...served, client, payFor, paid };
}

type Receipt = { success: boolean; transaction: string };
const receiptOf = (result: { _meta?: Record<string, unknown> }) => result._meta?.['x402/payment-response'] as Receipt | undefined;

describe('a paying gateway whose facilitator is another (MCP SDK client → turnpike wrap → turnpike facilitator over HTTP)', () => {
  before(async () => {
    upstream = await startCounterUpstream();
    // `turnpike facilitator` on the sandbox, reached over HTTP, with its own relayer and store.
    const relayerKeys = [chain.sandbox.accounts.relayers[0]!.privateKey];
    remote = await facilitatorOverHttp(chain, { relayerKeys, apiKeys: [KEY], failuresPerMinute: 3 });
  });
  after(async () => {
    for (const close of closing) await close();
    await remote.close();
    await upstream.close();
  });

  describe('the gateway with facilitator.mode remote: a turnpike facilitator over HTTP verifies and settles', () => {
    let gateway: Awaited<ReturnType<typeof wrap>>;
    before(async () => {
      gateway = await wrap({ mode: 'remote', url: remote.url }, { remoteFacilitatorKey: KEY });
    });

    test('an MCP SDK client pays a tool: the remote’s receipt, USDC moved once, the same call again is the kept result', async () => {
      const payment = await gateway.payFor('count', 1);
      const [before, runs, settles] = [await chain.balanceOf(payee()), upstream.runs(), remote.count('/settle')];
      const result = await gateway.paid('count', payment);
      assert.equal(result.isError, undefined, JSON.stringify(result));
      assert.equal(receiptOf(result)?.success, true);
      assert.equal(await chain.balanceOf(payee()), before + 10_000n);
      assert.equal(upstream.runs(), runs + 1);
      assert.equal(remote.count('/settle'), settles + 1);
      assert.ok(
        remote.seen.every((s) => s.headers.get('authorization') === `Bearer ${KEY}`),
        'every request carries the key',
      );

      const again = await gateway.paid('count', payment);
      assert.deepEqual(again, result);
      assert.equal(upstream.runs(), runs + 1);
      assert.equal(remote.count('/settle'), settles + 1);
      const other = await gateway.paid('other', payment);
      assert.match(JSON.stringify(other.structuredContent), /nonce_already_used/);
      assert.equal(await chain.balanceOf(payee()), before + 10_000n);
    });

    test('12 concurrent copies of one payment run the tool once and reach the remote once to verify and once to settle', async () => {
      const payment = await gateway.payFor('count', 2);
      const [runs, verifies, settles] = [upstream.runs(), remote.count('/verify'), remote.count('/settle')];
      const results = await Promise.all(Array.from({ length: 12 }, () => gateway.paid('count', payment)));
      assert.equal(upstream.runs(), runs + 1);
      assert.deepEqual([remote.count('/verify') - verifies, remote.count('/settle') - settles], [1, 1]);
      assert.ok(results.filter((r) => receiptOf(r)?.success).length >= 1);
      assert.ok(
        results.every((r) => receiptOf(r)?.success || r.isError),
        'no result without its receipt',
      );
    });

    test('a failing tool is not charged: the remote is never asked to settle', async () => {
      const payment = await gateway.payFor('fail', 3);
      const [before, settles] = [await chain.balanceOf(payee()), remote.count('/settle')];
      const failed = await gateway.paid('fail', payment);
      assert.equal(failed.isError, true);
      assert.equal(receiptOf(failed), undefined);
      assert.equal(remote.count('/settle'), settles);
      assert.equal(await chain.balanceOf(payee()), before);
    });

    test('a settlement answer lost on the way withholds the result; the same payment again delivers it, the tool run once', async () => {
      const payment = await gateway.payFor('count', 4);
      const runs = upstream.runs();
      remote.dropNextSettle('before');
      const withheld = await gateway.paid('count', payment);
      assert.equal(withheld.isError, true);
      assert.match(JSON.stringify(withheld.content), /settlement failed.*retry with the same payment/);
      assert.doesNotMatch(JSON.stringify(withheld), /"text":"\d+"/, 'no tool output in the answer');
      const delivered = await gateway.paid('count', payment);
      assert.equal(receiptOf(delivered)?.success, true, JSON.stringify(delivered));
      assert.equal(upstream.runs(), runs + 1);
    });

    test('a retry that finds the remote still not answering is told to retry (503), not refused; the next retry delivers, the tool run once', async () => {
      const payment = await gateway.payFor('count', 3);
      const runs = upstream.runs();
      remote.dropNextSettle('before');
      assert.equal((await gateway.paid('count', payment)).isError, true, 'withheld');
      remote.dropNextSettle('before');
      const params = { name: 'count', arguments: {}, _meta: { 'x402/payment': payment } };
      const retry = await fetch(`${gateway.url}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params }),
      });
      const text = await retry.text();
      assert.equal(retry.status, 503, text);
      assert.match(text, /payment verification is unavailable, retry/);
      const delivered = await gateway.paid('count', payment);
      assert.equal(receiptOf(delivered)?.success, true, JSON.stringify(delivered));
      assert.equal(upstream.runs(), runs + 1);
    });

    /** A settlement answer the remote loses after settling: the call is withheld, then its retry delivered once, as the chain says. */
    const lostAfterSettling = async (payment: unknown) => {
      const [before, runs] = [await chain.balanceOf(payee()), upstream.runs()];
      remote.dropNextSettle('after');
      const withheld = await gateway.paid('count', payment);
      assert.equal(withheld.isError, true);
      assert.equal(receiptOf(withheld), undefined);
      const delivered = await gateway.paid('count', payment);
      assert.equal(receiptOf(delivered)?.success, true, JSON.stringify(delivered));
      assert.equal(upstream.runs(), runs + 1);
      assert.equal(await chain.balanceOf(payee()), before + 10_000n);
      return delivered;
    };

    test('a settlement answer lost after the remote settled: withheld, then delivered on the retry as the chain says', async () => {
      await lostAfterSettling(await gateway.payFor('count', 7));
    });

    test('a v1 payment whose settlement answer was lost after the remote settled is delivered on the retry, as the chain says: the tool run once, USDC moved once', async () => {
      const payload = await signAuthorization({ payer: chain.sandbox.accounts.payers[5]!, payTo: payee(), amount: 10_000n });
      const payment = { x402Version: 1, scheme: 'exact', network: 'base', payload };
      const [before, runs] = [await chain.balanceOf(payee()), upstream.runs()];
      const delivered = await lostAfterSettling(payment);
      assert.deepEqual(await gateway.paid('count', payment), delivered, 'and again: the kept result');
      assert.equal(upstream.runs(), runs + 1);
      assert.equal(await chain.balanceOf(payee()), before + 10_000n);
    });

    test('payments the remote refuses do not get the gateway throttled there: a good payment after 5 refused ones is served', async () => {
      // A payer with no USDC: every payment is refused by the remote (3 refusals a minute get an unkeyed address a 429).
      const broke = new x402Client().register('eip155:8453', new ExactEvmScheme(chain.sandbox.accounts.payees[0]!));
      for (let i = 0; i < 5; i++) {
        const challenged = await gateway.client.callTool({ name: 'count', arguments: {} });
        const payment = await broke.createPaymentPayload(challenged.structuredContent as unknown as PaymentRequired);
        const refused = await gateway.paid('count', payment);
        assert.match(JSON.stringify(refused.structuredContent), /insufficient_balance/, JSON.stringify(refused));
      }
      const good = await gateway.paid('count', await gateway.payFor('count', 8));
      assert.equal(receiptOf(good)?.success, true, JSON.stringify(good));
    });

    test('the gateway serves no /facilitator of its own, and discovery names the remote', async () => {
      assert.equal((await gateway.api('GET', '/facilitator/supported')).status, 404);
      const discovery = await gateway.api('GET', '/.well-known/mcp-payment');
      assert.equal(discovery.body.endpoints[0].x402.facilitator, new URL(remote.url).href);
    });
  });

  describe('the gateway in remote mode taking a top-up or unable to reach its remote, and in cdp mode', () => {
    test('a USDC top-up is settled by the remote once: the key is funded, the same payment again moves nothing', async () => {
      const gateway = await wrap({ mode: 'remote', url: remote.url }, { remoteFacilitatorKey: KEY }, {});
      let signature: string | undefined;
      const recording: typeof fetch = async (input, init) => {
        const request = new Request(input, init);
        signature ??= request.headers.get('payment-signature') ?? undefined;
        return fetch(request);
      };
      const scheme = new ExactEvmScheme(chain.sandbox.accounts.payers[9]!);
      const paying = wrapFetchWithPaymentFromConfig(recording, { schemes: [{ network: 'eip155:8453', client: scheme }] });
      const [before, settles] = [await chain.balanceOf(payee()), remote.count('/settle')];
      const res = await paying(`${gateway.url}/credits/topup?usd=1`, { method: 'POST' });
      assert.equal(res.status, 201, await res.clone().text());
      const funded = (await res.json()) as { balance: string; receipt: { success: boolean } };
      assert.deepEqual([funded.balance, funded.receipt.success], ['1000000', true]);
      const replay = await fetch(`${gateway.url}/credits/topup?usd=1`, { method: 'POST', headers: { 'payment-signature': signature! } });
      assert.equal(replay.status, 409);
      assert.equal(await chain.balanceOf(payee()), before + 1_000_000n);
      assert.equal(remote.count('/settle'), settles + 1);
    });

    test('an unreachable remote: the paid call is answered 503 and the tool never runs', async () => {
      const gateway = await wrap({ mode: 'remote', url: 'http://127.0.0.1:9' }, {});
      const payment = await gateway.payFor('count', 5);
      const runs = upstream.runs();
      const params = { name: 'count', _meta: { 'x402/payment': payment } };
      const answer = await fetch(`${gateway.url}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params }),
      });
      assert.equal(answer.status, 503);
      assert.match(await answer.text(), /payment verification is unavailable, retry/);
      assert.equal(upstream.runs(), runs);
    });

    test('cdp: every verify and settle goes out with a CDP JWT, and the paid call succeeds', async () => {
      const pem = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
      const secrets = { cdpApiKeyId: 'organizations/test/apiKeys/gateway', cdpApiKeySecret: pem };
      // CDP's stand-in: a turnpike facilitator (its own relayer, no keys of its own) behind CDP's path.
      const cdp = await facilitatorOverHttp(chain, { relayerKeys: [chain.sandbox.accounts.relayers[1]!.privateKey] });
      closing.push(() => cdp.close());
      const gateway = await wrap({ mode: 'cdp', url: `${cdp.url}/platform/v2/x402` }, secrets);
      const payment = await gateway.payFor('count', 6);
      const result = await gateway.paid('count', payment);
      assert.equal(receiptOf(result)?.success, true, JSON.stringify(result));
      const requests = cdp.seen;
      assert.deepEqual(
        requests.map((r) => r.path),
        ['/platform/v2/x402/verify', '/platform/v2/x402/settle'],
      );
      for (const { headers } of requests) {
        const jwt = /^Bearer [\w-]+\.([\w-]+)\.[\w-]+$/.exec(headers.get('authorization') ?? '');
        assert.ok(jwt, `expected a bearer JWT, got ${headers.get('authorization')}`);
        assert.equal(JSON.parse(Buffer.from(jwt[1]!, 'base64url').toString()).sub, 'organizations/test/apiKeys/gateway');
      }
    });
  });
});
