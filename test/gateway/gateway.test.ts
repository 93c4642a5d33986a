import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { x402Client } from '@x402/core/client';
import type { PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { wrapFetchWithPaymentFromConfig } from '@x402/fetch';
import { networks } from '../../src/chain/networks.js';
import type { DemoAccount } from '../../src/chain/sandbox/accounts.js';
import type { Facilitator } from '../../src/facilitator/facilitator.js';
import { x402Rail } from '../../src/rails/x402/rail.js';
import { createGateway } from '../../src/gateway/gateway.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { createApp } from '../../src/http/app.js';
import { type Listening, listen } from '../../src/http/listen.js';
import { createLogger } from '../../src/log/logger.js';
import { createMetrics, metricsRoutes } from '../../src/http/metrics.js';
import { useSandbox } from '../helpers/chain.js';
import { startEverything } from '../helpers/everything.js';
import type { Store } from '../../src/store/store.js';
import { toolsLookups } from '../../src/upstream/upstream-tools.js';
import { discoveryRoutes } from '../../src/http/discovery.js';
import { healthRoutes } from '../../src/http/health.js';

const chain = useSandbox({ isolate: false });
const logger = createLogger({ level: 'silent', format: 'json' });
const metrics = createMetrics();
let upstream: Awaited<ReturnType<typeof startEverything>>;
let upstreamUrl: string;
let gateway: Listening;
let http402: Listening;
let store: Store;
let mcpUrl: URL;

async function startGateway(facilitator: Facilitator, challenge: 'tool-result' | 'http-402') {
  const app = createApp(logger);
  let url = '';
  const upstream = { url: upstreamUrl, headers: {}, timeoutMs: 10_000 };
  const prices = priceTableSchema.parse({ default: '0.01', tools: { 'get-sum': '0.05' }, free: ['echo'] });
  const payTo = chain.sandbox.accounts.payees[0]!.address;
  const tools = toolsLookups().of(upstream);
  const endpoints = async () => [{ path: '/mcp', plan: flatPlan(prices), payTo, tools }];
  app.route('/', discoveryRoutes({ network: networks.local, endpoints, facilitator: '/facilitator' }));
  app.route('/', healthRoutes({ client: chain.client, store }));
  app.route('/', metricsRoutes(metrics));
  app.route(
    '/mcp',
    createGateway({
      upstream,
      plan: flatPlan(prices),
      payTo,
      network: networks.local,
      rails: [x402Rail({ facilitator })],
      challenge,
      bodyLimitBytes: 1 << 20,
      allowedHosts: () => [new URL(url).host],
      logger,
      metrics,
      server: 'test',
    }),
  );
  const server = await listen(app, { host: '127.0.0.1', port: 0 });
  url = server.url;
  return server;
}

async function connect() {
  const client = new Client({ name: 'turnpike-test', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(mcpUrl));
  return client;
}

/** The official x402 client turns a PaymentRequired into a signed payment. */
const pay = (payer: DemoAccount, required: PaymentRequired) =>
  new x402Client().register('eip155:8453', new ExactEvmScheme(payer)).createPaymentPayload(required);

describe('paying MCP proxy (official MCP SDK client → turnpike → server-everything)', () => {
  before(async () => {
    upstream = await startEverything();
    upstreamUrl = upstream.url;
    const opened = await chain.facilitator([0]);
    store = opened.store;
    const { facilitator } = opened;
    gateway = await startGateway(facilitator, 'tool-result');
    http402 = await startGateway(facilitator, 'http-402');
    mcpUrl = new URL(`${gateway.url}/mcp`);
  });
  after(async () => {
    await Promise.all([gateway?.close(), http402?.close()]);
    upstream?.kill();
  });

  test('tools/list carries each tool’s price in _meta', async () => {
    const client = await connect();
    const { tools } = await client.listTools();
    const byName = Object.fromEntries(tools.map((t) => [t.name, t._meta?.['turnpike/price'] as Record<string, string>]));
    assert.deepEqual(byName['get-sum'], {
      amount: '50000',
      usd: '0.05',
      asset: networks.base.usdc.address,
      network: 'eip155:8453',
      payTo: chain.sandbox.accounts.payees[0]!.address,
    });
    assert.equal(byName['echo']?.amount, '0');
    assert.equal(byName['get-env']?.amount, '10000');
    await client.close();
  });

  test('discovery: /.well-known/mcp-payment lists the real tools with prices; /pricing flat; /health', async () => {
    const doc = (await (await fetch(`${gateway.url}/.well-known/mcp-payment`)).json()) as {
      version: number;
      endpoints: {
        url: string;
        x402: { network: string; payTo: string; facilitator: string };
        tools: { name: string; amount: string; usd: string }[];
      }[];
    };
    assert.equal(doc.version, 1);
    const [endpoint] = doc.endpoints;
    assert.equal(endpoint!.url, mcpUrl.toString());
    assert.equal(endpoint!.x402.network, 'eip155:8453');
    assert.equal(endpoint!.x402.facilitator, `${gateway.url}/facilitator`);
    const byName = Object.fromEntries(endpoint!.tools.map((t) => [t.name, t.usd]));
    assert.equal(byName['get-sum'], '0.05');
    assert.equal(byName['echo'], '0');
    assert.equal(byName['get-env'], '0.01');
    const pricing = (await (await fetch(`${gateway.url}/pricing`)).json()) as { prices: { tool: string; amount: string }[] };
    assert.ok(pricing.prices.some((p) => p.tool === '*' && p.amount === '10000'));
    const health = await fetch(`${gateway.url}/health`);
    assert.equal(health.status, 200);
    const body = (await health.json()) as { status: string; settlementBacklog: number };
    assert.deepEqual([body.status, body.settlementBacklog], ['ok', 0]);
  });

  test('a free tool passes straight through', async () => {
    const client = await connect();
    const result = await client.callTool({ name: 'echo', arguments: { message: 'hi' } });
    assert.equal(result.isError, undefined);
    assert.match(JSON.stringify(result.content), /hi/);
    await client.close();
  });

  test('a priced tool is challenged, then paid: the result carries the receipt and USDC moved', async () => {
    const client = await connect();
    await client.listTools();
    const challenged = await client.callTool({ name: 'get-sum', arguments: { a: 2, b: 3 } });
    assert.equal(challenged.isError, true);
    const required = challenged.structuredContent as unknown as PaymentRequired;
    assert.equal(required.x402Version, 2);
    assert.equal(required.accepts[0]!.amount, '50000');
    assert.equal(required.resource.url, mcpUrl.toString());
    assert.deepEqual(JSON.parse((challenged.content as { text: string }[])[0]!.text), required);

    const payer = chain.sandbox.accounts.payers[0]!;
    const payee = chain.sandbox.accounts.payees[0]!.address;
    const [payerBefore, payeeBefore] = [await chain.balanceOf(payer.address), await chain.balanceOf(payee)];
    const payment = await pay(payer, required);
    const paid = await client.callTool({ name: 'get-sum', arguments: { a: 2, b: 3 }, _meta: { 'x402/payment': payment } });
    assert.equal(paid.isError, undefined, JSON.stringify(paid));
    assert.match(JSON.stringify(paid.content), /5/);
    const receipt = paid._meta?.['x402/payment-response'] as { success: boolean; transaction: string; payer: string };
    assert.equal(receipt.success, true);
    assert.equal(receipt.payer, payer.address);
    assert.equal(await chain.balanceOf(payer.address), payerBefore - 50_000n);
    assert.equal(await chain.balanceOf(payee), payeeBefore + 50_000n);

    // The same call again (as after a lost answer) gets the result back; another call is refused.
    const again = await client.callTool({ name: 'get-sum', arguments: { a: 2, b: 3 }, _meta: { 'x402/payment': payment } });
    assert.deepEqual(again, paid);
    const replay = await client.callTool({ name: 'get-sum', arguments: { a: 2, b: 4 }, _meta: { 'x402/payment': payment } });
    assert.equal(replay.isError, true);
    assert.match(JSON.stringify(replay.structuredContent), /nonce_already_used/);
    assert.equal(await chain.balanceOf(payee), payeeBefore + 50_000n);

    const text = await (await fetch(`${gateway.url}/metrics`)).text();
    assert.match(text, /turnpike_tool_calls_total\{server="test",tool="get-sum",outcome="paid"\} [1-9]/);
    assert.match(text, /turnpike_tool_calls_total\{server="test",tool="get-sum",outcome="challenged"\} [1-9]/);
    assert.match(text, /turnpike_payment_denials_total\{server="test",reason="invalid_exact_evm_nonce_already_used"\} [1-9]/);
    assert.match(
      text,
      /turnpike_revenue_atomic_total\{server="test",asset="0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",network="eip155:8453"\} [1-9]/,
    );
    assert.match(text, /turnpike_settlement_seconds_count [1-9]/);
    await client.close();
  });

  test('progress notifications of a paid call stream through, frame by frame, before the receipt', async () => {
    const client = await connect();
    const args = { duration: 0.3, steps: 3 };
    const challenged = await client.callTool({ name: 'trigger-long-running-operation', arguments: args });
    const payment = await pay(chain.sandbox.accounts.payers[2]!, challenged.structuredContent as unknown as PaymentRequired);
    const progress: number[] = [];
    const result = await client.callTool(
      { name: 'trigger-long-running-operation', arguments: args, _meta: { 'x402/payment': payment } },
      undefined,
      { onprogress: (p) => progress.push(p.progress) },
    );
    assert.deepEqual(progress, [1, 2, 3]);
    assert.equal((result._meta?.['x402/payment-response'] as { success: boolean }).success, true, JSON.stringify(result));
    await client.close();
  });

  test('a tool that fails (isError or a JSON-RPC error) is not charged', async () => {
    const client = await connect();
    const challenged = await client.callTool({ name: 'get-sum', arguments: { a: 'not a number', b: 1 } });
    const payment = await pay(chain.sandbox.accounts.payers[1]!, challenged.structuredContent as unknown as PaymentRequired);
    const payee = chain.sandbox.accounts.payees[0]!.address;
    const before = await chain.balanceOf(payee);
    const failed = await client.callTool({ name: 'get-sum', arguments: { a: 'not a number', b: 1 }, _meta: { 'x402/payment': payment } });
    assert.equal(failed.isError, true);
    assert.equal(failed._meta?.['x402/payment-response'], undefined);
    assert.equal(await chain.balanceOf(payee), before);
    await client.close();
  });

  test('http-402 mode: an unmodified MCP SDK client whose fetch is @x402/fetch pays on its own', async () => {
    const payer = chain.sandbox.accounts.payers[3]!;
    const payee = chain.sandbox.accounts.payees[0]!.address;
    const before = await chain.balanceOf(payee);
    const payingFetch = wrapFetchWithPaymentFromConfig(fetch, { schemes: [{ network: 'eip155:8453', client: new ExactEvmScheme(payer) }] });
    const client = new Client({ name: 'x402-fetch-client', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${http402.url}/mcp`), { fetch: payingFetch }));
    const result = await client.callTool({ name: 'get-sum', arguments: { a: 20, b: 22 } });
    assert.match(JSON.stringify(result.content), /42/);
    assert.equal((result._meta?.['x402/payment-response'] as { success: boolean }).success, true);
    assert.equal(await chain.balanceOf(payee), before + 50_000n);
    await client.close();
  });

  test('http-402 mode: the challenge is a 402 with PAYMENT-REQUIRED (v2) and a v1 body', async () => {
    const res = await fetch(`${http402.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'get-sum', arguments: { a: 1, b: 1 } } }),
    });
    assert.equal(res.status, 402);
    const v2 = JSON.parse(Buffer.from(res.headers.get('payment-required')!, 'base64').toString());
    assert.equal(v2.accepts[0].amount, '50000');
    const v1 = (await res.json()) as { x402Version: number; accepts: { maxAmountRequired: string; network: string }[] };
    assert.deepEqual([v1.x402Version, v1.accepts[0]!.maxAmountRequired, v1.accepts[0]!.network], [1, '50000', 'base']);
  });

  test('bad requests get JSON-RPC errors, not 5xx, and never reach a paid tool', async () => {
    const post = (body: string, headers: Record<string, string> = {}) =>
      fetch(mcpUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
        body,
      });
    const garbage = await post('{"jsonrpc":');
    assert.equal(garbage.status, 400);
    assert.equal(((await garbage.json()) as { error: { code: number } }).error.code, -32700);
    // An unknown session: whatever the upstream answers, the client gets exactly that.
    const stale = JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' });
    const headers = {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-session-id': 'no-such-session',
    };
    const direct = await fetch(upstreamUrl, { method: 'POST', headers, body: stale });
    const proxied = await post(stale, { 'mcp-session-id': 'no-such-session' });
    assert.equal(proxied.status, direct.status);
    assert.ok(proxied.status >= 400 && proxied.status < 500);
    assert.equal(await proxied.text(), await direct.text());
    const batch = await post(
      JSON.stringify([{ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'get-sum', arguments: { a: 1, b: 1 } } }]),
    );
    assert.equal(batch.status, 400);
    const badPayment = await post(
      JSON.stringify({
        jsonrpc: '2.0',
        id: 7,
        method: 'tools/call',
        params: { name: 'get-sum', arguments: { a: 1, b: 1 }, _meta: { 'x402/payment': 'garbage!' } },
      }),
    );
    assert.equal(badPayment.status, 200);
    assert.match(JSON.stringify(await badPayment.json()), /invalid_payload: payment is not base64/);
    // fetch may not set Host; a raw request can, as a DNS-rebinding page's would arrive.
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(mcpUrl, { method: 'POST', headers: { host: 'evil.example', 'content-type': 'application/json' } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      req.end('{}');
    });
    assert.equal(status, 403);
    const origin = await post('{}', { origin: 'http://evil.example' });
    assert.equal(origin.status, 403);
  });
});
