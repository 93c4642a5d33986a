import assert from 'node:assert/strict';
import { gunzipSync, gzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import { x402Client } from '@x402/core/client';
import type { PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { Hono } from 'hono';
import { networks } from '../../src/chain/networks.js';
import type { Facilitator } from '../../src/facilitator/facilitator.js';
import { type Listening, listen } from '../../src/http/listen.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import { x402Rail } from '../../src/rails/x402/rail.js';
import type { PaymentJournal } from '../../src/store/journal/journal.js';
import { useSandbox } from '../helpers/chain.js';
import { listenGateway } from '../helpers/gateway.js';

/**
 * Attacker tests: an upstream answer turnpike cannot read (compressed although nobody asked, an
 * SSE stream labelled text/plain, a response with both a result and `"error": null`) must not
 * carry a priced result out unpaid. The upstream is the official SDK's server, its answer bent
 * afterwards the way a misconfigured front (a proxy that compresses, a framework that forgets the
 * content type, a JSON-RPC library that writes `"error": null`) bends it.
 */
const chain = useSandbox({ isolate: false });
const SECRET = 'the-priced-secret-4711';
const servers: Listening[] = [];
let facilitator: Facilitator;
let journal: PaymentJournal;
let upstreamUrl = '';
let runs = 0;
/** The Accept-Encoding of the last request the upstream got. */
let acceptEncoding: string | undefined;

type Bend = 'gzip' | 'sse-as-text' | 'error-null' | 'id-null' | 'id-null-sse';

/** The SDK server at `/<bend>`: a `secret` tool whose text is SECRET, its answer bent as `bend` says. */
async function startBentUpstream() {
  const app = new Hono();
  app.all('/:bend', async (c) => {
    const bend = c.req.param('bend') as Bend;
    acceptEncoding = c.req.header('accept-encoding');
    const server = new McpServer({ name: 'secret', version: '1.0.0' });
    server.registerTool('secret', { description: 'a priced secret' }, async () => {
      runs++;
      return { content: [{ type: 'text', text: SECRET }] };
    });
    const transport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: undefined,
      enableJsonResponse: bend !== 'sse-as-text' && bend !== 'id-null-sse',
    });
    await server.connect(transport);
    const answer = await transport.handleRequest(c.req.raw);
    const text = await answer.text();
    if (bend === 'gzip')
      return new Response(gzipSync(text), {
        status: answer.status,
        headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
      });
    if (bend === 'sse-as-text')
      return new Response(text, { status: answer.status, headers: { 'content-type': 'text/plain; charset=utf-8' } });
    // A JSON-RPC library that takes ids for numbers answers a string id with null.
    if (bend === 'id-null' || bend === 'id-null-sse')
      return new Response(text.replace(/"id":"turnpike-paid:[^"]*"/g, '"id":null'), { status: answer.status, headers: answer.headers });
    return new Response(text.replace(/^\{"result":/, '{"error":null,"result":'), {
      status: answer.status,
      headers: { 'content-type': 'application/json' },
    });
  });
  const served = await listen(app, { host: '127.0.0.1', port: 0 });
  servers.push(served);
  return served.url;
}

async function gatewayFor(bend: Bend) {
  const served = await listenGateway({
    upstream: { url: `${upstreamUrl}/${bend}`, headers: {}, timeoutMs: 10_000 },
    plan: flatPlan(priceTableSchema.parse({ default: '0.02' })),
    payTo: chain.sandbox.accounts.payees[1]!.address,
    rails: [x402Rail({ facilitator })],
    server: 'test',
  });
  servers.push(served);
  return `${served.url}/mcp`;
}

const post = (url: string, payment?: unknown) =>
  fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-06-18' },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'tools/call',
      params: { name: 'secret', arguments: {}, ...(payment ? { _meta: { 'x402/payment': payment } } : {}) },
    }),
  });

/** The answer's bytes as the attacker reads them: raw, and decompressed if they are gzip. */
async function rawText(res: Response): Promise<string> {
  const bytes = Buffer.from(await res.arrayBuffer());
  // fetch already undid a Content-Encoding it knows; gzip bytes left over are undone here too.
  return bytes[0] === 0x1f && bytes[1] === 0x8b ? gunzipSync(bytes).toString() : bytes.toString();
}

/** A paid call of `secret` through a gateway in front of the `bend` upstream: what the caller got, and what became of the payment. */
async function paidCall(bend: Bend) {
  const url = await gatewayFor(bend);
  const challenge = (await (await post(url)).json()) as { result: { structuredContent: PaymentRequired } };
  const payment = await new x402Client()
    .register('eip155:8453', new ExactEvmScheme(chain.sandbox.accounts.payers[2]!))
    .createPaymentPayload(challenge.result.structuredContent);
  const payee = chain.sandbox.accounts.payees[1]!.address;
  const before = { balance: await chain.balanceOf(payee), runs };
  const res = await post(url, payment);
  const text = await rawText(res);
  const auth = (payment.payload as { authorization: { from: string; nonce: string } }).authorization;
  const record = await journal.get({
    chainId: 8453,
    asset: networks.base.usdc.address.toLowerCase() as `0x${string}`,
    payer: auth.from.toLowerCase() as `0x${string}`,
    nonce: auth.nonce.toLowerCase() as `0x${string}`,
  });
  return { text, ran: runs - before.runs, earned: (await chain.balanceOf(payee)) - before.balance, state: record?.state };
}

describe('attacker: an upstream answer turnpike cannot read never carries a priced result out unpaid', () => {
  before(async () => {
    upstreamUrl = await startBentUpstream();
    ({ facilitator } = await chain.facilitator([1]).then((opened) => ((journal = opened.store.journal), opened)));
  });
  after(() => Promise.all(servers.map((s) => s.close())));

  test('a gzip-compressed answer the upstream sent unasked: the caller gets no result, and is not charged', async () => {
    const { text, ran, earned, state } = await paidCall('gzip');
    assert.equal(acceptEncoding, 'identity', 'turnpike asks for an answer it can read');
    assert.equal(ran, 1, 'the tool ran');
    assert.ok(!text.includes(SECRET), `the priced result left unpaid: ${text}`);
    assert.equal(earned, 0n);
    assert.equal(state, 'failed');
  });

  test('an SSE answer labelled text/plain: the caller gets no result, and is not charged', async () => {
    const { text, ran, earned, state } = await paidCall('sse-as-text');
    assert.equal(ran, 1, 'the tool ran');
    assert.ok(!text.includes(SECRET), `the priced result left unpaid: ${text}`);
    assert.equal(earned, 0n);
    assert.equal(state, 'failed');
  });

  test('a result the upstream sends under another id (null, for a string id it cannot echo) as its JSON answer: not passed on, not charged', async () => {
    const { text, ran, earned, state } = await paidCall('id-null');
    assert.equal(ran, 1, 'the tool ran');
    assert.ok(!text.includes(SECRET), `the priced result left unpaid: ${text}`);
    assert.equal(earned, 0n);
    assert.equal(state, 'failed');
  });

  test('a result the upstream sends under another id on its SSE answer: not passed on, not charged', async () => {
    const { text, ran, earned, state } = await paidCall('id-null-sse');
    assert.equal(ran, 1, 'the tool ran');
    assert.ok(!text.includes(SECRET), `the priced result left unpaid: ${text}`);
    assert.equal(earned, 0n);
    assert.equal(state, 'failed');
  });

  test('a response carrying a result beside "error": null: the result does not leave uncharged', async () => {
    const { text, ran, earned, state } = await paidCall('error-null');
    assert.equal(ran, 1, 'the tool ran');
    assert.ok(!text.includes(SECRET), `the priced result left unpaid: ${text}`);
    assert.equal(earned, 0n, 'JSON-RPC allows a result or an error, never both: the call failed, and costs nothing');
    assert.equal(state, 'failed');
  });
});
