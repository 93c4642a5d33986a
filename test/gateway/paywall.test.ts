import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { x402Client } from '@x402/core/client';
import type { PaymentPayload, PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { networks } from '../../src/chain/networks.js';
import type { Facilitator } from '../../src/facilitator/facilitator.js';
import { createApp } from '../../src/http/app.js';
import { facilitatorRoutes } from '../../src/http/facilitator-routes.js';
import { createLogger } from '../../src/log/logger.js';
import { createCredits } from '../../src/rails/credits/credits.js';
import { creditsRail } from '../../src/rails/credits/rail.js';
import { openDebits, openLedgerDebits } from '../../src/rails/credits/open-debits.js';
import type { RailFactory } from '../../src/rails/rail.js';
import { x402Rail } from '../../src/rails/x402/rail.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import type { Listening } from '../../src/http/listen.js';
import type { Store } from '../../src/store/store.js';
import { useSandbox } from '../helpers/chain.js';
import { listenGateway } from '../helpers/gateway.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { startEverything } from '../helpers/everything.js';
import { eventually } from '../helpers/served.js';

const chain = useSandbox({ isolate: false });
const servers: Listening[] = [];
let facilitator: Facilitator;
let store: Store;
let counter: Awaited<ReturnType<typeof startCounterUpstream>>;
let everything: Awaited<ReturnType<typeof startEverything>>;
const PRICE = 30_000n;

async function gatewayFor(upstreamUrl: string, rails: RailFactory[] = [x402Rail({ facilitator })]) {
  const server = await listenGateway({
    upstream: { url: upstreamUrl, headers: {}, timeoutMs: 20_000 },
    plan: flatPlan(priceTableSchema.parse({ default: '0.03' })),
    payTo: chain.sandbox.accounts.payees[1]!.address,
    rails,
    server: 'paywall',
  });
  servers.push(server);
  return `${server.url}/mcp`;
}

type Rpc = { jsonrpc: '2.0'; id?: number; method: string; params?: Record<string, unknown> };
const headersFor = (session?: string) => ({
  'content-type': 'application/json',
  accept: 'application/json, text/event-stream',
  'mcp-protocol-version': '2025-11-25',
  ...(session ? { 'mcp-session-id': session } : {}),
});
const post = (url: string, message: Rpc, session?: string, signal?: AbortSignal, headers: Record<string, string> = {}) =>
  fetch(url, {
    method: 'POST',
    headers: { ...headersFor(session), ...headers },
    body: JSON.stringify(message),
    ...(signal ? { signal } : {}),
  });

/** The JSON-RPC messages in an answer, JSON or SSE. */
async function messagesOf(res: Response): Promise<{ id?: unknown; result?: any; error?: any }[]> {
  const text = await res.text();
  if (!res.headers.get('content-type')?.includes('text/event-stream')) return text ? [JSON.parse(text)] : [];
  return text
    .split(/\n\n/)
    .map((frame) =>
      frame
        .split('\n')
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).trim())
        .join(''),
    )
    .filter(Boolean)
    .map((data) => JSON.parse(data));
}

async function initialize(url: string): Promise<string> {
  const res = await post(url, {
    jsonrpc: '2.0',
    id: 0,
    method: 'initialize',
    params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'thief', version: '1' } },
  });
  const session = res.headers.get('mcp-session-id')!;
  await res.text();
  await (await post(url, { jsonrpc: '2.0', method: 'notifications/initialized' }, session)).text();
  return session;
}

async function paymentFor(url: string, call: Rpc, session?: string, payer = chain.sandbox.accounts.payers[7]!): Promise<PaymentPayload> {
  const [challenge] = await messagesOf(await post(url, call, session));
  const required = challenge!.result.structuredContent as PaymentRequired;
  return new x402Client().register('eip155:8453', new ExactEvmScheme(payer)).createPaymentPayload(required);
}

/** Sends a paid call answered on a stream and reads it up to its first event with an id: that id, and the hang-up. */
async function streamUntilFirstEvent(url: string, message: Rpc, session: string, headers: Record<string, string> = {}) {
  const hangUp = new AbortController();
  const stream = await post(url, message, session, hangUp.signal, headers);
  assert.match(stream.headers.get('content-type') ?? '', /text\/event-stream/);
  const reader = stream.body!.getReader();
  let first = '';
  while (!/id: *\S+/.test(first)) first += new TextDecoder().decode((await reader.read()).value);
  return { lastEventId: /id: *(\S+)/.exec(first)![1]!, hangUp: () => hangUp.abort() };
}

/** What the session's stream resumed after `lastEventId` (as a compliant client does) replays within 3 s (a loaded machine is slow to replay). */
async function resumed(url: string, session: string, lastEventId: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    headers: { ...headersFor(session), accept: 'text/event-stream', 'last-event-id': lastEventId, ...headers },
    signal: AbortSignal.timeout(3_000),
  });
  assert.equal(res.status, 200);
  let replayed = '';
  try {
    for await (const chunk of res.body! as unknown as AsyncIterable<Uint8Array>) replayed += new TextDecoder().decode(chunk);
  } catch {
    // the timeout ends the stream
  }
  return replayed;
}

const longCall = (id: number): Rpc => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/call',
  params: { name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 2 }, _meta: { progressToken: `p${id}` } },
});
const RESULT = /Long running operation completed/;

const errorOf = async (res: Response) => ((await res.json()) as { error: { message: string } }).error.message;
const paid = (call: Rpc, payment: unknown): Rpc => ({
  ...call,
  params: { ...call.params, _meta: { ...(call.params?._meta as object), 'x402/payment': payment } },
});
const keyOf = (payment: PaymentPayload) => {
  const auth = (payment.payload as { authorization: { from: string; nonce: string } }).authorization;
  return {
    chainId: 8453,
    asset: networks.base.usdc.address.toLowerCase() as `0x${string}`,
    payer: auth.from.toLowerCase() as `0x${string}`,
    nonce: auth.nonce.toLowerCase() as `0x${string}`,
  };
};

describe('no paid result without its payment', () => {
  before(async () => {
    [counter, everything] = await Promise.all([startCounterUpstream(), startEverything()]);
    ({ facilitator, store } = await chain.facilitator([2]));
  });
  after(async () => {
    await Promise.all([...servers.map((s) => s.close()), counter.close()]);
    everything.kill();
  });

  test('a caller who hangs up a paid stream and resumes it with Last-Event-ID does not get the result there; the call is charged once and its result is given back only to the same payment', async () => {
    const url = await gatewayFor(everything.url);
    const session = await initialize(url);
    const call = longCall(5);
    const payment = await paymentFor(url, call, session);
    const payee = chain.sandbox.accounts.payees[1]!.address;
    const before = await chain.balanceOf(payee);

    const { lastEventId, hangUp } = await streamUntilFirstEvent(url, paid(call, payment), session);
    hangUp();

    // The call runs on to its result, so it is charged, once.
    await eventually(
      () => store.journal.get(keyOf(payment)),
      (r) => r?.state === 'settled',
      'the payment settles',
    );
    assert.equal(await chain.balanceOf(payee), before + PRICE);

    // Resume as a compliant client does; the upstream replays everything it sent after that event.
    const replayed = await resumed(url, session, lastEventId);
    assert.match(replayed, /notifications\/progress/, 'the replay did happen');
    assert.doesNotMatch(replayed, RESULT, 'the paid result is not in the resumed stream');

    // The result is kept for the payment that bought it.
    const again = await messagesOf(await post(url, paid(call, payment), session));
    assert.match(JSON.stringify(again[0]?.result), RESULT);
    assert.equal(again[0]?.result._meta['x402/payment-response'].success, true);
    assert.equal(again[0]?.id, 5);
    assert.equal(await chain.balanceOf(payee), before + PRICE, 'given back, not charged again');

    // The same authorization with a forged signature is not the payment that bought the result.
    const forged = { ...payment, payload: { ...payment.payload, signature: `0x${'11'.repeat(65)}` } };
    const [stolen] = await messagesOf(await post(url, paid(call, forged), session));
    assert.equal(stolen?.result?.isError, true, JSON.stringify(stolen));
    assert.doesNotMatch(JSON.stringify(stolen), RESULT);
  });

  test('on credits too: a caller who hangs up and resumes with Last-Event-ID gets no result there; the debit stands once and the same Idempotency-Key gets the result', async () => {
    const credits = createCredits({ store, tokenSecret: await store.instanceSecret('budget-tokens') });
    const debits = openDebits(openLedgerDebits(store.credits), { maxCallMs: async () => 20_000 });
    const url = await gatewayFor(everything.url, [creditsRail({ credits, store, debits }), x402Rail({ facilitator })]);
    const funding = { amount: 1_000_000n, reason: 'test', idempotencyKey: 'paywall-resume' };
    const { secret, key } = await credits.createKey({ name: 'resumer' }, funding);
    const balance = async () => (await credits.keyById(key.id)).balance;
    const auth = { authorization: `Bearer ${secret}`, 'idempotency-key': 'resume-1' };
    const session = await initialize(url);
    const call = longCall(6);

    const { lastEventId, hangUp } = await streamUntilFirstEvent(url, call, session, auth);
    hangUp();
    await eventually(
      () => store.credits.request(key.id, auth['idempotency-key']),
      (r) => r?.response !== undefined,
      'the call to run to its result',
    );
    const replayed = await resumed(url, session, lastEventId, { authorization: auth.authorization });
    assert.match(replayed, /notifications\/progress/, 'the replay did happen');
    assert.doesNotMatch(replayed, RESULT, 'the paid result is not in the resumed stream');

    const again = await messagesOf(await post(url, call, session, undefined, auth));
    assert.match(JSON.stringify(again[0]?.result), RESULT, 'the same Idempotency-Key gets the result the debit paid for');
    assert.equal(await balance(), 1_000_000n - PRICE, 'charged once, not refunded, not charged again');
  });

  test('the race of reproduction 8: the payment of a held call sent to /settle takes nothing, the caller hangs up, the call settles once, and journal, chain and /settle agree', async () => {
    const url = await gatewayFor(everything.url);
    const logger = createLogger({ level: 'silent', format: 'json' });
    const api = createApp(logger);
    api.route('/', facilitatorRoutes(facilitator, { bodyLimitBytes: 1 << 16, logger }));
    const settle = async () => {
      const body = JSON.stringify({ x402Version: 2, paymentPayload: payment, paymentRequirements: payment.accepted });
      const res = await api.request('/settle', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      return { status: res.status, body: (await res.json()) as { success: boolean; errorReason?: string; errorMessage?: string } };
    };
    const session = await initialize(url);
    const call = longCall(7);
    const payment = await paymentFor(url, call, session);
    const payee = chain.sandbox.accounts.payees[1]!.address;
    const [before, txs] = [await chain.balanceOf(payee), await chain.relayerTxCount()];

    const { hangUp } = await streamUntilFirstEvent(url, paid(call, payment), session);
    assert.equal((await store.journal.get(keyOf(payment)))?.state, 'verified', 'the tool runs on a hold');
    const copy = await settle();
    assert.deepEqual([copy.status, copy.body.success, copy.body.errorReason], [200, false, 'invalid_exact_evm_nonce_already_used']);
    assert.equal(await chain.relayerTxCount(), txs, '/settle sent nothing');
    hangUp();

    const record = await eventually(
      () => store.journal.get(keyOf(payment)),
      (r) => r?.state !== 'verified' && r?.state !== 'submitting' && r?.state !== 'submitted',
      'the call’s settlement to finish',
    );
    assert.equal(record?.state, 'settled', record?.errorMessage);
    assert.equal((await chain.client.getTransactionReceipt({ hash: record!.txHash! as `0x${string}` })).status, 'success');
    assert.equal(await chain.relayerTxCount(), txs + 1);
    assert.equal(await chain.balanceOf(payee), before + PRICE);
    const late = await settle();
    assert.deepEqual([late.status, late.body.errorReason], [200, 'invalid_exact_evm_nonce_already_used'], 'the row’s state, never a 500');
    assert.match(String(late.body.errorMessage), new RegExp(record!.txHash!));
  });

  test('a body in another charset, with a duplicate key, a number a double cannot carry, invalid UTF-8, a byte-order mark or routing headers that disagree with it is refused before the upstream sees it', async () => {
    const url = await gatewayFor(`${counter.url}/mcp`);
    const runs = counter.runs();
    const smuggled = '{"jsonrpc":"2.0","id":1,"method":"+AHQAbwBvAGwAcwAvAGMAYQBsAGw-","params":{"name":"count","arguments":{}}}';
    const send = (body: string | Uint8Array, type = 'application/json') =>
      fetch(url, { method: 'POST', headers: { ...headersFor(), 'content-type': type }, body });
    const utf7 = await send(smuggled, 'application/json; charset=utf-7');
    assert.equal(utf7.status, 415);
    assert.match(await errorOf(utf7), /UTF-8/);
    const twice = await send('{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"count"}}');
    assert.equal(twice.status, 400);
    assert.match(await errorOf(twice), /duplicate key "method"/);
    const escaped = await send('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"other","n\\u0061me":"count"}}');
    assert.equal(escaped.status, 400, 'a key spelled with an escape is the same key');
    const invalid = await send(
      new Uint8Array([
        ...new TextEncoder().encode('{"jsonrpc":"2.0","id":1,"method":"ping","x":"'),
        0xff,
        ...new TextEncoder().encode('"}'),
      ]),
    );
    assert.equal(invalid.status, 400);
    const bom = await send(`\uFEFF${smuggled}`);
    assert.equal(bom.status, 400);
    const big = await send(
      '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"count","arguments":{"n":12345678901234567890}}}',
    );
    assert.equal(big.status, 400, 'a number turnpike would re-encode as another (…67000) is not passed on');
    assert.match(await errorOf(big), /12345678901234567890 cannot be carried exactly/);
    const nameless = await send('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["count"]}}');
    assert.equal(nameless.status, 400, 'a tools/call whose name is not a string is not passed on as free');
    const routed = await fetch(url, {
      method: 'POST',
      headers: { ...headersFor(), 'mcp-method': 'tools/call', 'mcp-name': 'count' },
      body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
    });
    assert.equal(routed.status, 400, 'routing headers that name another call than the body');
    assert.match(await errorOf(routed), /Mcp-Method says "tools\/call"/);
    assert.equal(counter.runs(), runs, 'nothing ran');
    assert.equal((await send(smuggled, 'Application/JSON; charset="UTF-8"')).status, 200, 'UTF-8, however spelled, is fine');
    const forwarded = counter.lastRequest()!;
    assert.equal(forwarded.headers.get('content-type'), 'application/json', 'the upstream is told the encoding turnpike wrote');
    assert.deepEqual(JSON.parse(forwarded.body), JSON.parse(smuggled));
  });

  test('the upstream never receives the payment: not in _meta, not in a header, not in a batch', async () => {
    const url = await gatewayFor(`${counter.url}/mcp`);
    const call: Rpc = {
      jsonrpc: '2.0',
      id: 1,
      method: 'tools/call',
      params: { name: 'count', arguments: {}, _meta: { progressToken: 7 } },
    };
    const payment = await paymentFor(url, call);
    const res = await fetch(url, {
      method: 'POST',
      headers: { ...headersFor(), 'payment-signature': 'c2VjcmV0', 'x-payment': 'c2VjcmV0' },
      body: JSON.stringify(paid(call, payment)),
    });
    const [answer] = await messagesOf(res);
    assert.equal(answer?.result._meta['x402/payment-response'].success, true);
    const seen = counter.lastRequest()!;
    assert.deepEqual(JSON.parse(seen.body).params, { name: 'count', arguments: {}, _meta: { progressToken: 7 } });
    assert.equal(seen.headers.get('payment-signature'), null);
    assert.equal(seen.headers.get('x-payment'), null);
    assert.doesNotMatch(seen.body, new RegExp((payment.payload as { signature: string }).signature.slice(2, 40)));

    const batch = [
      { jsonrpc: '2.0', id: 2, method: 'ping', params: { _meta: { 'x402/payment': payment, 'x402.payment': payment, keep: 1 } } },
    ];
    await fetch(url, { method: 'POST', headers: headersFor(), body: JSON.stringify(batch) });
    assert.deepEqual(JSON.parse(counter.lastRequest()!.body), [{ jsonrpc: '2.0', id: 2, method: 'ping', params: { _meta: { keep: 1 } } }]);
  });

  test('a paid call whose arguments nest 100,000 deep is a 400 before any payment is held', async () => {
    const url = await gatewayFor(`${counter.url}/mcp`);
    const call: Rpc = { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'count', arguments: {} } };
    const payment = await paymentFor(url, call);
    const body = JSON.stringify(paid(call, payment)).replace(
      '"arguments":{}',
      `"arguments":{"deep":${'['.repeat(100_000)}${']'.repeat(100_000)}}`,
    );
    const res = await fetch(url, { method: 'POST', headers: headersFor(), body });
    assert.equal(res.status, 400);
    assert.match(await errorOf(res), /nested deeper than/);
    assert.equal(await store.journal.get(keyOf(payment)), undefined, 'no hold was written');
  });

  test("a priced tool called as an MCP task, or with MCP's related-task _meta, is refused before a payment is held, and no task exists to fetch its result from", async () => {
    const url = await gatewayFor(everything.url);
    const session = await initialize(url);
    const asTask: Rpc = {
      jsonrpc: '2.0',
      id: 1,
      method: 'tools/call',
      params: { name: 'simulate-research-query', arguments: { topic: 'report' }, task: { ttl: 60_000 } },
    };
    const payment = await paymentFor(url, { ...asTask, params: { ...asTask.params, task: undefined } }, session);
    const refused = await post(url, paid(asTask, payment), session);
    assert.equal(refused.status, 400);
    assert.match(await errorOf(refused), /cannot be called as a task/);
    const redirected: Rpc = {
      jsonrpc: '2.0',
      id: 2,
      method: 'tools/call',
      params: {
        name: 'simulate-research-query',
        arguments: { topic: 'report' },
        _meta: { 'io.modelcontextprotocol/related-task': { taskId: 'any' } },
      },
    };
    const elsewhere = await post(url, paid(redirected, payment), session);
    assert.equal(elsewhere.status, 400);
    assert.match(await errorOf(elsewhere), /related-task/);
    assert.equal(await store.journal.get(keyOf(payment)), undefined, 'no hold was written');
    const [listed] = await messagesOf(await post(url, { jsonrpc: '2.0', id: 3, method: 'tasks/list', params: {} }, session));
    assert.deepEqual(listed?.result.tasks, [], 'no task was created');
  });
});
