import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { networks } from '../../src/chain/networks.js';
import { x402Rail } from '../../src/rails/x402/rail.js';
import { createGateway } from '../../src/gateway/gateway.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { createApp } from '../../src/http/app.js';
import { type Listening, listen } from '../../src/http/listen.js';
import { createMetrics } from '../../src/http/metrics.js';
import { createLogger } from '../../src/log/logger.js';
import { encodeHeader } from '../../src/x402/codec.js';
import { useSandbox } from '../helpers/chain.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { anyText, hexBytes, json, nearNumber } from './arbitraries.js';
import { address, anyPayload, mutated, uint } from './x402-arbitraries.js';

/**
 * JSON-RPC envelopes through a real gateway (no pure parser to call): whatever is POSTed, the
 * answer is never a 5xx, always JSON-RPC (or an accepted notification), and the priced tool of
 * the upstream never runs unpaid: a priced `tools/call` without a valid payment is challenged.
 */

const chain = useSandbox({ isolate: false });
const BODY_LIMIT = 8192;
/** Every tool is priced (default 0.01) but `other`. */
const FREE_TOOL = 'other';
let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;
let gateway: Listening;
let mcpUrl: string;
let relayerTxs: number;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Payments close to what the gateway asks for (its network, asset, payee, price) but never validly signed. */
const nearPayment = fc
  .record({
    version: fc.constantFrom(1, 2),
    value: fc.oneof(fc.constant('10000'), uint, nearNumber),
    from: address,
    signature: fc
      .integer({ min: 1, max: 70 })
      .chain((n) => hexBytes(n))
      .map((h) => `0x${h}`),
    nonce: hexBytes(32).map((h) => `0x${h}`),
    validBefore: fc.oneof(fc.constant(String(Math.floor(Date.now() / 1000) + 60)), uint),
  })
  .map(({ version, value, from, signature, nonce, validBefore }) => {
    const payload = {
      signature,
      authorization: { from, to: chain.sandbox.accounts.payees[1]!.address, value, validAfter: '0', validBefore, nonce },
    };
    return version === 1
      ? { x402Version: 1, scheme: 'exact', network: 'base', payload }
      : {
          x402Version: 2,
          accepted: {
            scheme: 'exact',
            network: 'eip155:8453',
            amount: value,
            asset: networks.base.usdc.address,
            payTo: chain.sandbox.accounts.payees[1]!.address,
            maxTimeoutSeconds: 120,
          },
          payload,
        };
  });
const payment = fc.oneof(
  nearPayment,
  anyPayload,
  mutated(anyPayload),
  json,
  nearPayment.map(encodeHeader),
  fc.base64String({ maxLength: 60 }),
);

const toolName = fc.oneof(
  fc.constantFrom('count', 'fail', FREE_TOOL, 'constructor', 'toString', '__proto__'),
  fc.string({ maxLength: 10 }),
);
const params = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record(
      { name: toolName, arguments: json, _meta: fc.record({ 'x402/payment': payment }, { requiredKeys: [] }) },
      { requiredKeys: ['name'] },
    ),
  },
  json,
);
const message = fc.record(
  {
    jsonrpc: fc.oneof({ weight: 4, arbitrary: fc.constant('2.0') }, json),
    id: fc.oneof(fc.integer(), fc.string({ maxLength: 8 }), fc.constant(null), json),
    method: fc.oneof(
      {
        weight: 4,
        arbitrary: fc.constantFrom('tools/call', 'tools/list', 'ping', 'initialize', 'notifications/initialized', 'resources/list'),
      },
      fc.string({ maxLength: 12 }),
    ),
    params,
  },
  { requiredKeys: ['method'] },
);
const body = fc.oneof(
  { weight: 4, arbitrary: message.map((m) => JSON.stringify(m)) },
  fc.array(message, { minLength: 0, maxLength: 3 }).map((batch) => JSON.stringify(batch)),
  json.map((v) => JSON.stringify(v)),
  anyText,
  fc.tuple(message, fc.constantFrom('', '\n', ' ', ',', '}', '\u0000')).map(([m, tail]) => JSON.stringify(m) + tail),
  fc.constant(
    JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'count', arguments: { pad: 'x'.repeat(BODY_LIMIT) } } }),
  ),
);
/** The payment may also come as a header (used when `_meta` has none). */
const header = fc.option(
  fc.oneof(
    nearPayment.map(encodeHeader),
    fc.base64String({ maxLength: 60 }),
    fc.string({ unit: fc.constantFrom(...'abc=+/ 019'.split('')), maxLength: 20 }),
  ),
  { nil: undefined },
);

/** A priced, unbatched `tools/call`, as the gateway reads the body. */
function pricedCall(text: string): boolean {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return false;
  }
  if (!isObject(parsed) || parsed.method !== 'tools/call' || !isObject(parsed.params)) return false;
  return typeof parsed.params.name === 'string' && parsed.params.name !== FREE_TOOL;
}

const isRpcResponse = (v: unknown) => isObject(v) && v.jsonrpc === '2.0' && 'id' in v && 'result' in v !== 'error' in v;

describe('gateway: arbitrary JSON-RPC envelopes (property, real gateway and upstream)', () => {
  before(async () => {
    upstream = await startCounterUpstream();
    const { facilitator } = await chain.facilitator([1]);
    const app = createApp(createLogger({ level: 'silent', format: 'json' }));
    let url = '';
    app.route(
      '/mcp',
      createGateway({
        upstream: { url: `${upstream.url}/mcp`, headers: {}, timeoutMs: 10_000 },
        plan: flatPlan(priceTableSchema.parse({ default: '0.01', free: [FREE_TOOL] })),
        payTo: chain.sandbox.accounts.payees[1]!.address,
        network: networks.local,
        rails: [x402Rail({ facilitator })],
        challenge: 'tool-result',
        bodyLimitBytes: BODY_LIMIT,
        allowedHosts: () => [new URL(url).host],
        logger: createLogger({ level: 'silent', format: 'json' }),
        metrics: createMetrics(),
        server: 'property',
      }),
    );
    gateway = await listen(app, { host: '127.0.0.1', port: 0 });
    url = gateway.url;
    mcpUrl = `${gateway.url}/mcp`;
    relayerTxs = await chain.relayerTxCount();
  });
  after(() => Promise.all([gateway?.close(), upstream?.close()]));

  test('never a 5xx, always JSON-RPC, priced calls challenged, the upstream never charged', async () => {
    await fc.assert(
      fc.asyncProperty(body, header, async (text, paymentHeader) => {
        const res = await fetch(mcpUrl, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            accept: 'application/json, text/event-stream',
            'mcp-protocol-version': '2025-06-18',
            ...(paymentHeader !== undefined ? { 'payment-signature': paymentHeader } : {}),
          },
          body: text,
        });
        const answer = await res.text();
        assert.ok(res.status < 500, `${res.status} for ${text.slice(0, 300)}: ${answer.slice(0, 300)}`);
        if (res.status === 202) return assert.equal(answer, '');
        let parsed: unknown;
        assert.doesNotThrow(() => (parsed = JSON.parse(answer)), `not JSON: ${answer.slice(0, 200)}`);
        assert.ok(isRpcResponse(parsed) || (Array.isArray(parsed) && parsed.every(isRpcResponse)), `not JSON-RPC: ${answer.slice(0, 300)}`);
        if (pricedCall(text) && Buffer.byteLength(text) <= BODY_LIMIT) {
          const result = (parsed as { result?: { isError?: boolean; structuredContent?: { x402Version?: number; accepts?: unknown[] } } })
            .result;
          assert.equal(res.status, 200);
          assert.equal(result?.isError, true, `priced call not challenged: ${text.slice(0, 200)} → ${answer.slice(0, 300)}`);
          assert.equal(result.structuredContent?.x402Version, 2);
        }
        assert.equal(upstream.runs(), 0, `the priced tool ran unpaid: ${text.slice(0, 300)}`);
      }),
      { numRuns: 200 },
    );
    assert.equal(await chain.relayerTxCount(), relayerTxs, 'a settlement was sent');
  });
});
