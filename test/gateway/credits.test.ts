import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { wrapFetchWithPaymentFromConfig } from '@x402/fetch';
import { networks } from '../../src/chain/networks.js';
import { x402Rail } from '../../src/rails/x402/rail.js';
import { createGateway } from '../../src/gateway/gateway.js';
import { CREDITS_META_KEY, creditsRail } from '../../src/rails/credits/rail.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { adminRoutes } from '../../src/http/admin-routes.js';
import { createApp } from '../../src/http/app.js';
import { creditsRoutes } from '../../src/http/credits-routes.js';
import { type Listening, listen } from '../../src/http/listen.js';
import { createMetrics } from '../../src/http/metrics.js';
import { createLogger } from '../../src/log/logger.js';
import { createCredits } from '../../src/rails/credits/credits.js';
import { openDebits, openLedgerDebits } from '../../src/rails/credits/open-debits.js';
import type { Store } from '../../src/store/store.js';
import { createCheckout } from '../../src/rails/stripe/checkout.js';
import { stripeClient } from '../../src/rails/stripe/stripe-client.js';
import { stripeRoutes } from '../../src/http/stripe-routes.js';
import { useSandbox } from '../helpers/chain.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { signedWebhook, startStripeApi } from '../helpers/stripe-api.js';
import { postToolCall, replayOnceDone } from '../helpers/gateway.js';

const chain = useSandbox({ isolate: false });
const logger = createLogger({ level: 'silent', format: 'json' });
const ADMIN = 'admin-key-for-tests-0123456789abcdef';
const servers: Listening[] = [];
let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;
let base = '';
let store: Store;
let stripeApi: Awaited<ReturnType<typeof startStripeApi>>;
const WEBHOOK_SECRET = 'whsec_test_secret_for_turnpike';
const stripe = () => stripeClient(stripeApi.apiKey, stripeApi.url);

const admin = (path: string, body?: unknown, key = ADMIN) =>
  fetch(`${base}/admin${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });

async function newKey(usd: string, extra: Record<string, unknown> = {}) {
  const res = await admin('/keys', { name: 'agent', usd, ...extra });
  assert.equal(res.status, 201);
  return (await res.json()) as { id: string; key: string; balance: string };
}

type Answer = {
  status: number;
  headers: Headers;
  body: {
    result?: {
      isError?: boolean;
      content?: { text: string }[];
      structuredContent?: { error: string; accepts: unknown[]; extensions?: Record<string, Record<string, unknown>> };
      _meta?: Record<string, Record<string, string>>;
    };
    error?: { code: number; message: string; data: { error: string } & Record<string, unknown> };
  };
};

async function call(tool: string, headers: Record<string, string>, id = 1): Promise<Answer> {
  const res = await postToolCall(`${base}/mcp`, tool, headers, id);
  return { status: res.status, headers: res.headers, body: (await res.json()) as Answer['body'] };
}

const bearer = (secret: string) => ({ authorization: `Bearer ${secret}` });
const balanceOf = async (id: string) => ((await (await admin(`/keys/${id}`)).json()) as { balance: string }).balance;
const ledgerOf = async (id: string) =>
  ((await (await admin(`/keys/${id}/ledger`)).json()) as { entries: { kind: string; amount: string }[] }).entries;

describe('credits rail through the gateway', () => {
  before(async () => {
    upstream = await startCounterUpstream();
    const opened = await chain.facilitator([3]);
    store = opened.store;
    const credits = createCredits({ store, tokenSecret: await store.instanceSecret('budget-tokens') });
    const app = createApp(logger);
    app.route(
      '/mcp',
      createGateway({
        upstream: { url: `${upstream.url}/mcp`, headers: {}, timeoutMs: 10_000 },
        plan: flatPlan(priceTableSchema.parse({ default: '0.02', free: ['other'] })),
        payTo: chain.sandbox.accounts.payees[1]!.address,
        network: networks.local,
        rails: [
          creditsRail({ credits, store, debits: openDebits(openLedgerDebits(store.credits), { maxCallMs: async () => 20_000 }) }),
          x402Rail({ facilitator: opened.facilitator }),
        ],
        challenge: 'tool-result',
        bodyLimitBytes: 1 << 16,
        allowedHosts: () => [new URL(base).host],
        logger,
        metrics: createMetrics(),
        server: 'main',
      }),
    );
    const topup = { payTo: chain.sandbox.accounts.payees[0]!.address, min: 1_000_000n, max: 100_000_000n };
    stripeApi = await startStripeApi();
    const packages = { '10': { priceUsd: 10_000_000n, creditsUsd: 11_000_000n } };
    const checkout = (keyId: string, pack: string) =>
      createCheckout({ stripe: stripe(), credits: store.credits, packages, publicUrl: base }, keyId, pack);
    app.route('/credits', creditsRoutes({ credits, store, facilitator: opened.facilitator, network: networks.local, topup, checkout }));
    app.route('/stripe', stripeRoutes({ stripe: stripe(), webhookSecret: WEBHOOK_SECRET, credits: store.credits, logger }));
    app.route('/admin', adminRoutes({ credits, store, adminKey: ADMIN, catalog: [] }));
    const server = await listen(app, { host: '127.0.0.1', port: 0 });
    servers.push(server);
    base = server.url;
  });
  after(() => Promise.all([...servers.map((s) => s.close()), stripeApi.close(), upstream.close()]));

  test('the admin API needs the admin key, and shows a new key’s secret once', async () => {
    assert.equal((await admin('/keys', undefined, 'wrong')).status, 401);
    assert.equal((await fetch(`${base}/admin/keys`)).status, 401);
    const created = await newKey('0.05');
    assert.match(created.key, /^tp_[\w-]{43}$/);
    assert.equal(created.balance, '50000');
    const listed = await (await admin('/keys')).text();
    assert.ok(!listed.includes(created.key) && !listed.includes('hash'));
    const bad = await admin('/keys', { name: 'x', usd: '-1' });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { issues: { path: string }[] }).issues[0]!.path, 'usd');
    assert.equal((await admin('/keys', { name: 'x', usd: '0.0000001' })).status, 400);
  });

  test('adjustments and transfers: exact, once per idempotency key, never below zero, concurrent-safe', async () => {
    const a = await newKey('1');
    const b = await newKey('0.5');
    assert.equal((await admin(`/keys/${a.id}/adjust`, { usd: '-0.25', reason: 'goodwill reversal', idempotencyKey: 'adj-1' })).status, 201);
    assert.equal((await admin(`/keys/${a.id}/adjust`, { usd: '-0.25', reason: 'goodwill reversal', idempotencyKey: 'adj-1' })).status, 200);
    const below = await admin(`/keys/${b.id}/adjust`, { usd: '-0.500001', reason: 'x', idempotencyKey: 'adj-2' });
    assert.equal(below.status, 409);
    assert.equal((await admin(`/keys/${b.id}/adjust`, { usd: '0', reason: 'x', idempotencyKey: 'adj-3' })).status, 400);
    const moves = await Promise.all(
      Array.from({ length: 10 }, (_, i) => admin('/transfers', { from: a.id, to: b.id, usd: '0.1', idempotencyKey: `t-${i}` })),
    );
    assert.equal(moves.filter((m) => m.status === 201).length, 7);
    assert.ok(moves.filter((m) => m.status !== 201).every((m) => m.status === 409));
    assert.deepEqual([await balanceOf(a.id), await balanceOf(b.id)], ['50000', '1200000']);
    assert.equal((await admin('/transfers', { from: a.id, to: a.id, usd: '0.1', idempotencyKey: 'self' })).status, 400);
    assert.equal((await admin('/transfers', { from: a.id, to: 'key_nope', usd: '0.01', idempotencyKey: 'nope' })).status, 404);
    const entries = await ledgerOf(b.id);
    assert.equal(entries.filter((e) => e.kind === 'transfer').length, 7);
    assert.equal(
      entries.reduce((sum, e) => sum + BigInt(e.amount), 0n),
      1_200_000n,
    );
  });

  test('an MCP SDK client with a key pays from its balance; a failed tool is refunded in full', async () => {
    const { id, key } = await newKey('0.05');
    const client = new Client({ name: 'credits-test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${base}/mcp`), { requestInit: { headers: bearer(key) } }));
    const runs = upstream.runs();
    const result = await client.callTool({ name: 'count', arguments: {} });
    assert.equal(upstream.runs(), runs + 1);
    const receipt = result._meta?.[CREDITS_META_KEY] as Record<string, string>;
    assert.equal(receipt.charged, '20000');
    assert.equal(receipt.balance, '30000');
    assert.match(receipt.entry!, /^le_/);
    const failed = await client.callTool({ name: 'fail', arguments: {} });
    assert.equal(failed.isError, true);
    assert.equal(await balanceOf(id), '30000');
    assert.deepEqual(
      (await ledgerOf(id)).map((e) => `${e.kind} ${e.amount}`),
      ['refund 20000', 'debit -20000', 'debit -20000', 'topup 50000'],
    );
    await client.close();
  });

  test('X-Credits-Remaining, then an insufficient balance is the x402 challenge with where to top up', async () => {
    const { key } = await newKey('0.03');
    const paid = await call('count', { 'x-api-key': key });
    assert.equal(paid.headers.get('x-credits-remaining'), '10000');
    const runs = upstream.runs();
    const short = await call('count', bearer(key));
    assert.equal(upstream.runs(), runs);
    const challenge = short.body.result!.structuredContent!;
    assert.equal(short.body.result!.isError, true);
    assert.match(challenge.error, /^insufficient_balance/);
    assert.equal(challenge.accepts.length, 1);
    const ext = challenge.extensions!['turnpike/credits']!;
    assert.equal(ext.balance, '10000');
    assert.deepEqual(Object.keys(ext.topup as object).sort(), ['checkout', 'x402']);
  });

  test('Idempotency-Key: a retry returns the first answer and charges once; another body under the same key is 409', async () => {
    const { id, key } = await newKey('0.10');
    const headers = { ...bearer(key), 'idempotency-key': 'retry-1' };
    const runs = upstream.runs();
    const first = await call('count', headers);
    const again = await call('count', headers);
    assert.equal(upstream.runs(), runs + 1);
    assert.deepEqual(again.body, first.body);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.equal(await balanceOf(id), '80000');
    const conflict = await call('count', headers, 2);
    assert.equal(conflict.status, 409);
    assert.equal(conflict.body.error!.data.error, 'idempotency_key_reused');
  });

  test('a caller who hangs up during a paid call is charged for the result the tool produced, and gets it back with the same Idempotency-Key', async () => {
    const { id, key } = await newKey('0.10');
    const headers = {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
      ...bearer(key),
      'idempotency-key': 'hang-up-1',
    };
    const body = JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'slow', arguments: {} } });
    const runs = upstream.runs();
    await upstream.hangUpWhileSlow(`${base}/mcp`, { method: 'POST', headers, body });
    assert.equal(upstream.runs(), runs + 1, 'the tool ran to its result');
    const again = await replayOnceDone(`${base}/mcp`, { method: 'POST', headers, body });
    assert.equal(again.response.headers.get('idempotent-replayed'), 'true');
    assert.equal((again.body as Answer['body']).result?.content?.[0]?.text, String(runs + 1));
    assert.equal(upstream.runs(), runs + 1);
    assert.equal(await balanceOf(id), '80000', 'charged once, not refunded');
  });

  test('unknown, suspended, revoked and out-of-scope keys: specific errors, nothing run, nothing written', async () => {
    const runs = upstream.runs();
    const unknown = await call('count', bearer('tp_notakeynotakeynotakeynotakeynotakeynotakey0'));
    assert.equal(unknown.status, 401);
    assert.equal(unknown.body.error!.data.error, 'key_unknown');
    const { id, key } = await newKey('1');
    await admin(`/keys/${id}/suspend`, {});
    assert.equal((await call('count', bearer(key))).body.error!.data.error, 'key_suspended');
    await admin(`/keys/${id}/revoke`, {});
    const revoked = await call('count', bearer(key));
    assert.equal(revoked.status, 401);
    assert.equal(revoked.body.error!.data.error, 'key_revoked');
    // A credential refused is 401 `key_revoked`; a change asked of the revoked key is 409 `key_already_revoked`.
    for (const [path, body] of [
      [`/keys/${id}/resume`, {}],
      [`/keys/${id}/topup`, { usd: '1', idempotencyKey: 'late' }],
    ] as const) {
      const refused = await admin(path, body);
      assert.equal(refused.status, 409);
      assert.equal(((await refused.json()) as { error: string }).error, 'key_already_revoked');
    }
    const scoped = await newKey('1', { scope: { tools: ['other'] } });
    const out = await call('count', bearer(scoped.key));
    assert.equal(out.status, 403);
    assert.equal(out.body.error!.data.error, 'out_of_scope');
    assert.equal(upstream.runs(), runs);
    assert.equal((await ledgerOf(scoped.id)).length, 1);
    assert.equal((await ledgerOf(id)).length, 1);
  });

  test('a key revoked on another instance pays for nothing from its next call, though the rail remembers the key', async () => {
    const { id, key } = await newKey('1');
    assert.equal((await call('count', bearer(key))).status, 200);
    const balance = await balanceOf(id);
    const runs = upstream.runs();
    // Another instance's revocation: the store changes, this instance's credits are not told.
    await store.credits.setStatus(id, 'revoked');
    const refused = await call('count', bearer(key));
    assert.equal(refused.status, 401);
    assert.equal(refused.body.error!.data.error, 'key_revoked');
    assert.equal(upstream.runs(), runs);
    assert.equal(await balanceOf(id), balance);
  });

  test('a budget token: spends within its cap, a structured budget error past it, revocation on the next call, tampering refused', async () => {
    const { id, key } = await newKey('1');
    const mint = (body: unknown, secret = key) =>
      fetch(`${base}/credits/tokens`, {
        method: 'POST',
        headers: { ...bearer(secret), 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    assert.equal((await mint({ capUsd: '0.03', ttlSeconds: 86_401 })).status, 400);
    const minted = (await (await mint({ capUsd: '0.03', ttlSeconds: 600 })).json()) as { id: string; token: string };
    assert.equal((await mint({ capUsd: '0.01' }, minted.token)).status, 403);
    const ok = await call('count', bearer(minted.token));
    assert.equal(ok.body.result!._meta![CREDITS_META_KEY]!.budgetRemaining, '10000');
    const over = await call('count', bearer(minted.token));
    const ext = over.body.result!.structuredContent!.extensions!['turnpike/credits']!;
    assert.equal(ext.error, 'budget_exhausted');
    assert.equal(ext.budgetRemaining, '10000');
    const [head, payload, signature] = minted.token.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>;
    const forged = `${head}.${Buffer.from(JSON.stringify({ ...claims, cap: '999999999' })).toString('base64url')}.${signature}`;
    assert.equal((await call('count', bearer(forged))).body.error!.data.error, 'token_invalid');
    const revoked = await fetch(`${base}/credits/tokens/${minted.id}`, { method: 'DELETE', headers: bearer(key) });
    assert.equal(revoked.status, 200);
    assert.equal((await call('count', bearer(minted.token))).body.error!.data.error, 'token_revoked');
    assert.equal(await balanceOf(id), '980000');
  });

  test('USDC top-up: 402 first, then settled on chain before a new key is credited; the same payment cannot fund twice', async () => {
    const payer = chain.sandbox.accounts.payers[4]!;
    const treasury = chain.sandbox.accounts.payees[0]!.address;
    const unpaid = await fetch(`${base}/credits/topup?usd=2`, { method: 'POST' });
    assert.equal(unpaid.status, 402);
    assert.ok(unpaid.headers.get('payment-required'));
    assert.equal((await fetch(`${base}/credits/topup?usd=0.5`, { method: 'POST' })).status, 400);
    assert.equal((await fetch(`${base}/credits/topup?usd=-2`, { method: 'POST' })).status, 400);

    let sent: Headers | undefined;
    const recording: typeof fetch = async (input, init) => {
      const request = new Request(input, init);
      if (request.headers.get('payment-signature')) sent = request.headers;
      return fetch(request);
    };
    const paying = wrapFetchWithPaymentFromConfig(recording, { schemes: [{ network: 'eip155:8453', client: new ExactEvmScheme(payer) }] });
    const before = await chain.balanceOf(treasury);
    const res = await paying(`${base}/credits/topup?usd=1`, { method: 'POST' });
    assert.equal(res.status, 201);
    const funded = (await res.json()) as { id: string; key: string; balance: string; receipt: { success: boolean; transaction: string } };
    assert.equal(funded.balance, '1000000');
    assert.equal(funded.receipt.success, true);
    assert.equal((await chain.balanceOf(treasury)) - before, 1_000_000n);
    assert.ok((await call('count', bearer(funded.key))).body.result!._meta![CREDITS_META_KEY]);

    const replay = await fetch(`${base}/credits/topup?usd=1`, {
      method: 'POST',
      headers: { 'payment-signature': sent!.get('payment-signature')! },
    });
    assert.equal(replay.status, 409);
    assert.equal(((await replay.json()) as { error: string }).error, 'already_funded');
    assert.equal(await balanceOf(funded.id), '980000');
  });

  describe('Stripe top-ups (the official SDK against a local Stripe-shaped API)', () => {
    const deliver = (payload: string, signature = signedWebhook(stripe(), payload, WEBHOOK_SECRET)) =>
      fetch(`${base}/stripe/webhook`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'stripe-signature': signature },
        body: payload,
      });
    async function checkoutFor(key: string) {
      const res = await fetch(`${base}/credits/checkout`, {
        method: 'POST',
        headers: { ...bearer(key), 'content-type': 'application/json' },
        body: JSON.stringify({ package: '10' }),
      });
      assert.equal(res.status, 201);
      return (await res.json()) as { id: string; url: string };
    }

    test('checkout opens a payment-mode session bound to the key; unknown packages are 400', async () => {
      const { id, key } = await newKey('0.01');
      const session = await checkoutFor(key);
      assert.match(session.url, /^https:\/\/checkout\.stripe\.com\//);
      const sent = stripeApi.requests.find((r) => r.path === '/v1/checkout/sessions')!.body as Record<string, unknown> & {
        metadata: Record<string, string>;
      };
      assert.equal(sent.mode, 'payment');
      assert.equal(sent.client_reference_id, id);
      assert.equal(sent.metadata.key_id, id);
      const bad = await fetch(`${base}/credits/checkout`, {
        method: 'POST',
        headers: { ...bearer(key), 'content-type': 'application/json' },
        body: JSON.stringify({ package: 'nope' }),
      });
      assert.equal(bad.status, 400);
      assert.equal(((await bad.json()) as { error: string }).error, 'package_unknown');
    });

    test('a paid session is credited exactly once: duplicate deliveries, both events, any order', async () => {
      const { id, key } = await newKey('0.01');
      const session = await checkoutFor(key);
      const unpaid = stripeApi.event('checkout.session.completed', stripeApi.complete(session.id, 'unpaid'));
      const succeeded = stripeApi.event('checkout.session.async_payment_succeeded', stripeApi.complete(session.id, 'paid'));
      const completed = stripeApi.event('checkout.session.completed', stripeApi.complete(session.id, 'paid'));
      const outcome = async (payload: string) => ((await (await deliver(payload)).json()) as { outcome: string }).outcome;
      assert.equal(await outcome(unpaid.payload), 'ignored');
      assert.equal(await balanceOf(id), '10000');
      const first = await Promise.all([outcome(succeeded.payload), outcome(succeeded.payload), outcome(completed.payload)]);
      assert.deepEqual(first.sort(), ['credited', 'duplicate_event', 'duplicate_session']);
      assert.equal(await outcome(completed.payload), 'duplicate_event');
      assert.equal(await balanceOf(id), '11010000');
      const topups = (await ledgerOf(id)).filter((e) => e.kind === 'topup');
      assert.equal(topups.length, 2);
    });

    test('bad or stale signatures are 400 and credit nothing; other events are acknowledged', async () => {
      const { id, key } = await newKey('0.01');
      const session = await checkoutFor(key);
      const paid = stripeApi.event('checkout.session.completed', stripeApi.complete(session.id));
      const tampered = paid.payload.replace('"paid"', '"paid" ');
      assert.equal((await deliver(tampered, signedWebhook(stripe(), paid.payload, WEBHOOK_SECRET))).status, 400);
      assert.equal((await deliver(paid.payload, signedWebhook(stripe(), paid.payload, 'whsec_someone_else'))).status, 400);
      const stale = signedWebhook(stripe(), paid.payload, WEBHOOK_SECRET, Math.floor(Date.now() / 1000) - 3600);
      const replayed = await deliver(paid.payload, stale);
      assert.equal(replayed.status, 400);
      assert.equal(((await replayed.json()) as { error: string }).error, 'signature_invalid');
      assert.equal((await fetch(`${base}/stripe/webhook`, { method: 'POST', body: paid.payload })).status, 400);
      assert.equal(await balanceOf(id), '10000');
      const other = stripeApi.event('customer.created', { id: 'cus_1', object: 'customer' });
      const ack = await deliver(other.payload);
      assert.equal(ack.status, 200);
      assert.equal(((await ack.json()) as { outcome: string }).outcome, 'ignored');
      assert.equal((await deliver(paid.payload)).status, 200);
      assert.equal(await balanceOf(id), '11010000');
    });

    test('a signature dated a year ahead is 400 and credits nothing, though the SDK’s tolerance only looks back', async () => {
      const { id, key } = await newKey('0.01');
      const session = await checkoutFor(key);
      const paid = stripeApi.event('checkout.session.completed', stripeApi.complete(session.id));
      const ahead = signedWebhook(stripe(), paid.payload, WEBHOOK_SECRET, Math.floor(Date.now() / 1000) + 365 * 86_400);
      const refused = await deliver(paid.payload, ahead);
      assert.equal(refused.status, 400);
      const body = (await refused.json()) as { error: string; message: string };
      assert.equal(body.error, 'signature_invalid');
      assert.match(body.message, /ahead of this server’s clock/);
      assert.equal(await balanceOf(id), '10000');
      // A present time put in front: the SDK verifies the last `t=` (the year-ahead one), so the check must too.
      const disguised = await deliver(paid.payload, `t=${Math.floor(Date.now() / 1000)},${await ahead}`);
      assert.equal(disguised.status, 400);
      assert.match(((await disguised.json()) as { message: string }).message, /ahead of this server’s clock/);
      assert.equal(await balanceOf(id), '10000');
      const soon = signedWebhook(stripe(), paid.payload, WEBHOOK_SECRET, Math.floor(Date.now() / 1000) + 60);
      assert.equal((await deliver(paid.payload, soon)).status, 200, 'within the tolerance, as clocks differ');
      assert.equal(await balanceOf(id), '11010000');
    });

    test('a payment in another currency or of another amount is held for review, never credited as is; the admin sees it and decides once', async () => {
      const { id, key } = await newKey('0.01');
      const outcome = async (payload: string) => ((await (await deliver(payload)).json()) as { outcome: string }).outcome;
      const yen = await checkoutFor(key);
      const inYen = stripeApi.event('checkout.session.completed', { ...stripeApi.complete(yen.id), currency: 'jpy', amount_total: 1000 });
      assert.equal(await outcome(inYen.payload), 'held_for_review');
      const short = await checkoutFor(key);
      assert.equal(
        await outcome(stripeApi.event('checkout.session.completed', { ...stripeApi.complete(short.id), amount_total: 1 }).payload),
        'held_for_review',
      );
      assert.equal(await balanceOf(id), '10000', '1000 yen is not 10 dollars');

      const listed = (await (await admin('/checkouts?state=review')).json()) as {
        checkouts: { id: string; reviewReason: string; paid: unknown; expected: unknown }[];
      };
      const held = Object.fromEntries(listed.checkouts.map((c) => [c.id, c]));
      assert.deepEqual(
        [held[yen.id]?.reviewReason, held[yen.id]?.paid, held[yen.id]?.expected],
        ['currency_mismatch', { amount: '1000', currency: 'jpy' }, { amount: '1000', currency: 'usd' }],
      );
      assert.equal(held[short.id]?.reviewReason, 'amount_mismatch');

      const completed = stripeApi.event('checkout.session.completed', stripeApi.complete(short.id));
      assert.deepEqual(
        (await Promise.all([outcome(completed.payload), outcome(completed.payload)])).sort(),
        ['credited', 'duplicate_event'],
        'the correct event credits after all',
      );
      assert.equal(await balanceOf(id), '11010000');
      const rejected = await admin(`/checkouts/${yen.id}/reject`, {});
      assert.equal(rejected.status, 200);
      assert.equal(((await rejected.json()) as { state: string }).state, 'rejected');
      const twice = await admin(`/checkouts/${yen.id}/credit`, {});
      assert.equal(twice.status, 409);
      assert.equal(((await twice.json()) as { error: string }).error, 'checkout_not_in_review');
      assert.equal(await balanceOf(id), '11010000');
      assert.equal((await admin('/checkouts/cs_nobody/credit', {})).status, 404);
    });

    test('a checkout paid for a key revoked meanwhile is held, not credited to the dead key; the admin credits the holder’s replacement', async () => {
      const old = await newKey('0.01');
      const session = await checkoutFor(old.key);
      assert.equal((await admin(`/keys/${old.id}/revoke`, {})).status, 200);
      const paid = stripeApi.event('checkout.session.completed', stripeApi.complete(session.id));
      assert.equal(((await (await deliver(paid.payload)).json()) as { outcome: string }).outcome, 'held_for_review');
      assert.equal(await balanceOf(old.id), '10000');
      const onDeadKey = await admin(`/checkouts/${session.id}/credit`, {});
      assert.equal(onDeadKey.status, 409);
      assert.equal(((await onDeadKey.json()) as { error: string }).error, 'key_unusable');
      const replacement = await newKey('0.01');
      const credited = await admin(`/checkouts/${session.id}/credit`, { keyId: replacement.id });
      assert.equal(credited.status, 200);
      assert.equal(await balanceOf(replacement.id), '11010000');
      assert.equal(await balanceOf(old.id), '10000');
    });

    /** A Checkout Session of `key` paid (10.00 USD for 11 USD of credits) and credited; its PaymentIntent. */
    async function paidCheckout(key: string) {
      const session = await checkoutFor(key);
      const completed = stripeApi.complete(session.id);
      const paid = await deliver(stripeApi.event('checkout.session.completed', completed).payload);
      assert.equal(((await paid.json()) as { outcome: string }).outcome, 'credited');
      return completed.payment_intent as string;
    }
    const outcome = async (payload: string) => ((await (await deliver(payload)).json()) as { outcome: string }).outcome;

    test('a card payment refunded in full takes back its credits once, however often and at once the refund is delivered', async () => {
      const { id, key } = await newKey('0.01');
      const paymentIntent = await paidCheckout(key);
      assert.equal(await balanceOf(id), '11010000');
      const refunded = stripeApi.event('charge.refunded', stripeApi.charge(paymentIntent, 1000, 1000));
      const outcomes = await Promise.all([outcome(refunded.payload), outcome(refunded.payload), outcome(refunded.payload)]);
      assert.deepEqual(outcomes.sort(), ['duplicate_event', 'duplicate_event', 'taken_back']);
      assert.equal(await outcome(stripeApi.event('charge.refunded', stripeApi.charge(paymentIntent, 1000, 1000)).payload), 'unchanged');
      assert.equal(await balanceOf(id), '10000', 'what the key held before the purchase stays');
      assert.deepEqual(
        (await ledgerOf(id)).map((e) => `${e.kind} ${e.amount}`),
        ['adjustment -11000000', 'topup 11000000', 'topup 10000'],
      );
    });

    test('a partial refund takes back its share; a refund unsigned, wrongly signed or of another payment changes nothing', async () => {
      const { id, key } = await newKey('0.01');
      const paymentIntent = await paidCheckout(key);
      const partial = stripeApi.event('charge.refunded', stripeApi.charge(paymentIntent, 1000, 333));
      assert.equal((await fetch(`${base}/stripe/webhook`, { method: 'POST', body: partial.payload })).status, 400);
      assert.equal((await deliver(partial.payload, signedWebhook(stripe(), partial.payload, 'whsec_someone_else'))).status, 400);
      const elsewhere = stripeApi.event('charge.refunded', stripeApi.charge('pi_of_a_subscription_invoice', 1000, 1000));
      assert.equal(await outcome(elsewhere.payload), 'unattributed', 'Stripe knows no invoice it paid either');
      assert.equal(await balanceOf(id), '11010000');
      assert.equal(await outcome(partial.payload), 'taken_back');
      assert.equal(await balanceOf(id), String(11_010_000 - 3_663_000), '33.3 % of 11 USD of credits');
    });

    test('a refund after the credits were spent on paid calls takes what is left, suspends the key and shows the shortfall to the admin', async () => {
      const { id, key } = await newKey('0.01');
      const paymentIntent = await paidCheckout(key);
      assert.ok(!(await call('count', bearer(key))).body.error, 'a paid call: 20000 spent');
      assert.equal(await outcome(stripeApi.event('charge.refunded', stripeApi.charge(paymentIntent, 1000, 1000)).payload), 'shortfall');
      assert.equal(await balanceOf(id), '0');
      assert.equal(((await (await admin(`/keys/${id}`)).json()) as { status: string }).status, 'suspended');
      assert.equal((await call('count', bearer(key))).body.error!.data.error, 'key_suspended');
      const listed = (await (await admin('/checkouts?state=shortfall')).json()) as {
        checkouts: { keyId: string; paymentIntent: string; reversed: Record<string, string> }[];
      };
      assert.deepEqual(
        listed.checkouts.filter((c) => c.keyId === id).map((c) => [c.paymentIntent, c.reversed]),
        [[paymentIntent, { refunded: '1000', disputed: '0', takenBack: '10990000', shortfall: '10000' }]],
      );
    });

    test('a dispute takes back the disputed share, and a dispute closed won gives it back', async () => {
      const { id, key } = await newKey('0.01');
      const paymentIntent = await paidCheckout(key);
      assert.equal(await outcome(stripeApi.event('charge.dispute.created', stripeApi.dispute(paymentIntent, 1000)).payload), 'taken_back');
      assert.equal(await balanceOf(id), '10000');
      const won = stripeApi.event('charge.dispute.closed', stripeApi.dispute(paymentIntent, 1000, 'won'));
      assert.equal(await outcome(won.payload), 'given_back');
      assert.equal(await outcome(won.payload), 'duplicate_event');
      assert.equal(await balanceOf(id), '11010000');
    });

    test('a dispute’s created event delivered after its close, won, takes nothing; a second dispute of the charge counts on its own', async () => {
      const { id, key } = await newKey('0.01');
      const paymentIntent = await paidCheckout(key);
      const won = stripeApi.event('charge.dispute.closed', stripeApi.dispute(paymentIntent, 1000, 'won'));
      assert.equal(await outcome(won.payload), 'unchanged');
      assert.equal(await outcome(stripeApi.event('charge.dispute.created', stripeApi.dispute(paymentIntent, 1000)).payload), 'unchanged');
      assert.equal(await balanceOf(id), '11010000', 'the dispute was won: the credits stay');
      const second = stripeApi.dispute(paymentIntent, 500, 'needs_response', 'du_second');
      assert.equal(await outcome(stripeApi.event('charge.dispute.created', second).payload), 'taken_back');
      assert.equal(await balanceOf(id), String(11_010_000 - 5_500_000), 'half the charge disputed again: half the credits');
    });

    test('a card refund that fails gives its credits back once, whether its failure or the refund is delivered first', async () => {
      const { id, key } = await newKey('0.01');
      const paymentIntent = await paidCheckout(key);
      const at = Math.floor(Date.now() / 1000) - 600;
      const refunded = stripeApi.event('charge.refunded', stripeApi.charge(paymentIntent, 1000, 1000), { created: at });
      const failure = stripeApi.refund(paymentIntent, 1000, 'failed', at);
      const failed = stripeApi.event('charge.refund.updated', failure, { created: at + 300 });
      assert.equal(await outcome(refunded.payload), 'taken_back');
      assert.equal(await balanceOf(id), '10000');
      assert.equal(await outcome(failed.payload), 'given_back');
      assert.equal(await outcome(stripeApi.event('refund.failed', failure, { created: at + 300 }).payload), 'unchanged');
      assert.equal(await balanceOf(id), '11010000');
      const pending = stripeApi.event('charge.refund.updated', stripeApi.refund(paymentIntent, 1000, 'pending', at));
      assert.equal(await outcome(pending.payload), 'ignored', 'a refund update that is no failure is no fact');

      const other = await newKey('0.01');
      const late = await paidCheckout(other.key);
      const lateFailure = stripeApi.refund(late, 1000, 'failed', at);
      assert.equal(await outcome(stripeApi.event('charge.refund.updated', lateFailure, { created: at + 300 }).payload), 'unchanged');
      assert.equal(
        await outcome(stripeApi.event('charge.refunded', stripeApi.charge(late, 1000, 1000), { created: at }).payload),
        'unchanged',
      );
      assert.equal(await balanceOf(other.id), '11010000');
    });

    test('a refund that is canceled gives its credits back as a failed one does', async () => {
      const { id, key } = await newKey('0.01');
      const paymentIntent = await paidCheckout(key);
      const at = Math.floor(Date.now() / 1000) - 600;
      const refunded = stripeApi.event('charge.refunded', stripeApi.charge(paymentIntent, 1000, 1000), { created: at });
      assert.equal(await outcome(refunded.payload), 'taken_back');
      const canceled = stripeApi.event('refund.updated', stripeApi.refund(paymentIntent, 1000, 'canceled', at), { created: at + 300 });
      assert.equal(await outcome(canceled.payload), 'given_back', 'canceled: the buyer got nothing back');
      assert.equal(await balanceOf(id), '11010000');
    });
  });
});
