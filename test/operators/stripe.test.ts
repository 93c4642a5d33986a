import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import path from 'node:path';
import Stripe from 'stripe';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { useSandbox } from '../helpers/chain.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { eventually, serveOnSandbox } from '../helpers/served.js';
import { signedWebhook, startStripeApi } from '../helpers/stripe-api.js';

const chain = useSandbox({ isolate: false });
const ADMIN = 'admin-key-for-the-stripe-operator-tests-0123';
const WEBHOOK_SECRET = 'whsec_operator_tests_0123456789';
let served: Awaited<ReturnType<typeof serveOnSandbox>>;
let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;
let stripeApi: Awaited<ReturnType<typeof startStripeApi>>;
let operator: { id: string; key: string };
let apiKey: { id: string; key: string };
const now = () => Math.floor(Date.now() / 1000);

async function deliver(type: string, object: object, created = now()) {
  const { payload } = stripeApi.event(type, object, { created });
  const stripe = new Stripe(stripeApi.apiKey);
  return served.api('POST', '/stripe/webhook', {
    body: payload,
    headers: { 'stripe-signature': await signedWebhook(stripe, payload, WEBHOOK_SECRET) },
  });
}

async function callTool() {
  const res = await fetch(`${served.url}/mcp/subs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${apiKey.key}` },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'count', arguments: {} } }),
  });
  const body = (await res.json()) as { result?: { isError?: boolean; _meta?: Record<string, any> } };
  assert.equal(body.result?.isError, undefined, JSON.stringify(body));
  return body.result?._meta?.['turnpike/credits']?.charged ?? (body.result?._meta?.['turnpike/free'] ? 'covered' : 'unknown');
}

const subscription = (status: string, periodEnd = now() + 30 * 86_400) => ({
  id: 'sub_test_1',
  object: 'subscription',
  status,
  metadata: { key_id: apiKey.id, server: 'subs' },
  items: {
    object: 'list',
    data: [{ id: 'si_1', object: 'subscription_item', current_period_end: periodEnd, current_period_start: now() }],
  },
});
const invoice = (id: string, amountPaid: number) => ({
  id,
  object: 'invoice',
  amount_paid: amountPaid,
  parent: { type: 'subscription_details', subscription_details: { subscription: 'sub_test_1' } },
});

describe('operators and Stripe: subscriptions and Connect payouts', () => {
  before(async () => {
    upstream = await startCounterUpstream();
    stripeApi = await startStripeApi();
    served = await serveOnSandbox(chain, {
      overrides: {
        credits: { stripeApiUrl: stripeApi.url },
        operators: { allowPrivateUpstreams: true, takeRateBps: 1000, minPayoutUsd: '0.01' },
      },
      secrets: { adminKey: ADMIN, stripeSecretKey: stripeApi.apiKey, stripeWebhookSecret: WEBHOOK_SECRET },
    });
    const created = await served.api('POST', '/admin/operators', { key: ADMIN, body: { email: 'carol@example.com', name: 'carol' } });
    operator = { id: created.body.id, key: created.body.key };
    const server = await served.api('POST', '/operator/servers', {
      key: operator.key,
      body: {
        slug: 'subs',
        name: 'subscribed',
        upstream: `${upstream.url}/mcp`,
        custody: 'direct',
        payTo: chain.sandbox.accounts.payees[0]!.address,
        plan: { type: 'subscription', monthlyUsd: '20', callsPerMonth: 2, overage: { default: '0.05' } },
      },
    });
    assert.equal(server.status, 201, server.text);
    const key = await served.api('POST', '/admin/keys', { key: ADMIN, body: { name: 'subscriber', usd: '1' } });
    apiKey = { id: key.body.id, key: key.body.key };
  });
  after(async () => {
    await served?.gateway.close();
    await upstream?.close();
    await stripeApi?.close();
  });

  test('a subscription is bought through Checkout in subscription mode; its events decide the entitlement', async () => {
    assert.equal(await callTool(), '50000', 'without a subscription: the overage price');
    const checkout = await served.api('POST', '/credits/subscriptions', { key: apiKey.key, body: { server: 'subs' } });
    assert.equal(checkout.status, 201, checkout.text);
    assert.match(checkout.body.url, /^https:\/\/checkout\.stripe\.com\//);
    const sent = stripeApi.requests.find((r) => r.path === '/v1/checkout/sessions')!.body as Record<string, any>;
    assert.equal(sent.mode, 'subscription');
    assert.deepEqual(sent.line_items[0].price_data.recurring, { interval: 'month' });
    assert.equal(sent.line_items[0].price_data.unit_amount, '2000');
    const subs = (await served.api('GET', '/operator/servers/subs', { key: operator.key })).body;
    assert.deepEqual(sent.subscription_data.metadata, { key_id: apiKey.id, server: 'subs', server_id: subs.id }, 'the server by its id');
    assert.equal((await served.api('POST', '/credits/subscriptions', { key: apiKey.key, body: { server: 'nope' } })).status, 404);

    const saved = await deliver('customer.subscription.created', subscription('active'));
    assert.equal(saved.body.outcome, 'subscription_saved', saved.text);
    assert.deepEqual(
      [await callTool(), await callTool(), await callTool()],
      ['covered', 'covered', '50000'],
      'two calls in the allowance, then overage',
    );

    const failed = await deliver('invoice.payment_failed', invoice('in_failed', 0), now() + 5);
    assert.equal(failed.body.outcome, 'subscription_payment_failed');
    const stale = await deliver('customer.subscription.updated', subscription('active'), now() - 60);
    assert.equal(stale.status, 200);
    assert.equal(await callTool(), '50000', 'an older event does not restore the entitlement');
    await deliver('customer.subscription.updated', subscription('active'), now() + 10);
    assert.equal(await callTool(), '50000', 'entitled again, but the month’s allowance is used up');
    await deliver('customer.subscription.deleted', subscription('canceled'), now() + 20);
    const unknown = await deliver('customer.subscription.created', {
      ...subscription('active'),
      id: 'sub_other',
      metadata: { key_id: 'key_unknown', server: 'subs' },
    });
    assert.equal(unknown.body.outcome, 'subscription_unknown');
  });

  test('no subscription can be bought for a suspended server, nor for a server of a suspended operator: nothing would serve it', async () => {
    const subscribe = () => served.api('POST', '/credits/subscriptions', { key: apiKey.key, body: { server: 'subs' } });
    const opened = () => stripeApi.requests.filter((r) => r.path === '/v1/checkout/sessions').length;
    const before = opened();
    const toggle = async (status: string) =>
      assert.equal((await served.api('PATCH', '/operator/servers/subs', { key: operator.key, body: { status } })).status, 200);
    await toggle('suspended');
    const suspendedServer = await subscribe();
    assert.equal(suspendedServer.status, 404, suspendedServer.text);
    await toggle('active');
    assert.equal((await served.api('POST', `/admin/operators/${operator.id}/suspend`, { key: ADMIN })).status, 200);
    const suspendedOperator = await subscribe();
    assert.equal((await served.api('POST', `/admin/operators/${operator.id}/resume`, { key: ADMIN })).status, 200);
    assert.equal(suspendedOperator.status, 404, suspendedOperator.text);
    assert.equal(opened(), before, 'no Checkout Session was opened at Stripe');
    assert.equal((await subscribe()).status, 201, 'served again: sold again');
  });

  test('paid invoices are the operator’s fiat revenue, once each, split at the take rate', async () => {
    const paid = await deliver('invoice.paid', invoice('in_1', 2000));
    assert.equal(paid.body.outcome, 'subscription_paid');
    await deliver('invoice.paid', invoice('in_1', 2000));
    // 20.00 USD less 10%, plus the four overage calls (50000 each) less 10%.
    const balance = await eventually(
      async () => (await served.api('GET', '/operator/balance', { key: operator.key })).body,
      (b) => b.fiatEarned === String(18_000_000 + 4 * 45_000),
      'carol’s fiat earnings',
    );
    assert.equal(balance.fiatAvailable, '18180000');
    const store = await openSqliteStore({ path: path.join(served.dataDir, 'turnpike.db') });
    try {
      assert.deepEqual(await store.operators.pendingCharges(100), [], 'calls in the allowance cost nothing and wait for nothing');
    } finally {
      await store.close();
    }
    const analytics = (await served.api('GET', '/operator/analytics', { key: operator.key })).body;
    const rails = Object.fromEntries(analytics.byRail.map((r: { key: string; calls: number; revenue: string }) => [r.key, r]));
    assert.equal(rails.subscription.revenue, '20000000');
    assert.equal(rails.credits.calls, 4);
  });

  test('Connect payouts: onboarding link, then one transfer per request of the whole cents available', async () => {
    const early = await served.api('POST', '/operator/payouts', { key: operator.key, body: { idempotencyKey: 'p0' } });
    assert.equal(early.body.error, 'stripe_account_missing');
    const link = await served.api('POST', '/operator/payouts/onboarding', { key: operator.key });
    assert.equal(link.status, 201, link.text);
    assert.match(link.body.account, /^acct_/);
    assert.match(link.body.url, /^https:\/\/connect\.stripe\.com\//);
    const again = await served.api('POST', '/operator/payouts/onboarding', { key: operator.key });
    assert.equal(again.body.account, link.body.account, 'one account per operator');
    assert.equal(stripeApi.accounts.size, 1);

    const cents = await served.api('POST', '/operator/payouts', { key: operator.key, body: { usd: '0.001', idempotencyKey: 'sub-cent' } });
    assert.equal(cents.status, 400);
    const attempts = await Promise.all(
      ['p1', 'p2', 'p3'].map((k) =>
        served.api('POST', '/operator/payouts', { key: operator.key, body: { usd: '18.18', idempotencyKey: k } }),
      ),
    );
    const ok = attempts.filter((a) => a.status === 201);
    assert.equal(ok.length, 1, attempts.map((a) => a.text).join('\n'));
    assert.equal(ok[0]!.body.state, 'paid');
    assert.equal(stripeApi.transfers.size, 1);
    const [transfer] = [...stripeApi.transfers.values()] as { amount: number; destination: string }[];
    assert.deepEqual({ amount: transfer!.amount, destination: transfer!.destination }, { amount: 1818, destination: link.body.account });
    const repeat = await served.api('POST', '/operator/payouts', {
      key: operator.key,
      body: { usd: '18.18', idempotencyKey: ok[0]!.body.idempotencyKey },
    });
    assert.equal(repeat.status, 200);
    assert.equal(stripeApi.transfers.size, 1);
    assert.equal((await served.api('GET', '/operator/balance', { key: operator.key })).body.fiatAvailable, '0');

    await deliver('invoice.paid', invoice('in_2', 1000));
    await eventually(
      async () => (await served.api('GET', '/operator/balance', { key: operator.key })).body.fiatAvailable,
      (v) => v === '9000000',
      'the second invoice',
    );
    stripeApi.failNextTransfer();
    const refused = await served.api('POST', '/operator/payouts', { key: operator.key, body: { idempotencyKey: 'p4' } });
    assert.equal(refused.body.state, 'failed');
    assert.match(refused.body.error, /insufficient available funds/);
    assert.equal(
      (await served.api('GET', '/operator/balance', { key: operator.key })).body.fiatAvailable,
      '9000000',
      'a failed payout gives the money back',
    );
    const retried = await served.api('POST', '/operator/payouts', { key: operator.key, body: { idempotencyKey: 'p5' } });
    assert.equal(retried.body.state, 'paid');

    // A transfer made whose answer never came, retried after Stripe has forgotten the idempotency key.
    await deliver('invoice.paid', invoice('in_3', 500));
    await eventually(
      async () => (await served.api('GET', '/operator/balance', { key: operator.key })).body.fiatAvailable,
      (v) => v === '4500000',
      'the third invoice',
    );
    const transfersBefore = stripeApi.transfers.size;
    stripeApi.loseNextTransferAnswer();
    const lost = await served.api('POST', '/operator/payouts', { key: operator.key, body: { idempotencyKey: 'p6' } });
    assert.equal(lost.body.state, 'requested', 'the outcome is unknown: the money stays reserved');
    assert.equal(stripeApi.transfers.size, transfersBefore + 1);
    stripeApi.forgetIdempotencyKeys();
    const late = await served.api('POST', '/operator/payouts', { key: operator.key, body: { idempotencyKey: 'p6' } });
    assert.equal(late.body.state, 'paid');
    assert.equal(stripeApi.transfers.size, transfersBefore + 1, 'found, not made again');
    assert.equal((await served.api('GET', '/operator/balance', { key: operator.key })).body.fiatAvailable, '0');
    assert.equal((await served.api('GET', '/operator/payouts', { key: operator.key })).body.payouts.length, 4);
  });
  test('deleting a server cancels its live subscriptions at Stripe; a late invoice is still its operator’s, not the next server’s at the slug', async () => {
    const live = { ...subscription('active'), id: 'sub_live' };
    assert.equal((await deliver('customer.subscription.created', live)).body.outcome, 'subscription_saved');
    stripeApi.failCancels(true);
    const failed = await served.api('DELETE', '/operator/servers/subs', { key: operator.key });
    stripeApi.failCancels(false);
    assert.equal(failed.status, 503, failed.text);
    assert.match(failed.body.message, /retry the deletion/);
    assert.equal(
      (await served.api('GET', '/operator/servers/subs', { key: operator.key })).status,
      200,
      'nothing deleted while a subscription runs on',
    );

    const deleted = await served.api('DELETE', '/operator/servers/subs', { key: operator.key });
    assert.equal(deleted.status, 200, deleted.text);
    assert.deepEqual(deleted.body.cancelledSubscriptions, ['sub_live']);
    assert.deepEqual([...stripeApi.cancelled], ['sub_live'], 'cancelled at Stripe: the subscriber is charged no more');

    const other = await served.api('POST', '/admin/operators', { key: ADMIN, body: { email: 'dave@example.com', name: 'dave' } });
    const again = await served.api('POST', '/operator/servers', {
      key: other.body.key,
      body: {
        slug: 'subs',
        name: 'another',
        upstream: `${upstream.url}/mcp`,
        custody: 'direct',
        payTo: chain.sandbox.accounts.payees[1]!.address,
        plan: { type: 'per_call', default: '0.01' },
      },
    });
    assert.equal(again.status, 201, again.text);
    const before = BigInt((await served.api('GET', '/operator/balance', { key: operator.key })).body.fiatEarned);
    const late = await deliver('invoice.paid', {
      ...invoice('in_late', 1000),
      parent: { type: 'subscription_details', subscription_details: { subscription: 'sub_live' } },
    });
    assert.equal(late.body.outcome, 'subscription_paid');
    await eventually(
      async () => BigInt((await served.api('GET', '/operator/balance', { key: operator.key })).body.fiatEarned),
      (v) => v === before + 9_000_000n,
      'carol’s late invoice',
    );
    assert.equal((await served.api('GET', '/operator/balance', { key: other.body.key })).body.fiatEarned, '0', 'nothing of it is dave’s');
  });

  test('a refund or dispute of a subscription invoice’s payment takes back its share of the revenue once, in any order; one Stripe ties to no invoice is recorded as unattributed', async () => {
    const earned = async () => BigInt((await served.api('GET', '/operator/balance', { key: operator.key })).body.fiatEarned);
    const revenue = async () => {
      const analytics = (await served.api('GET', '/operator/analytics', { key: operator.key })).body;
      return BigInt(analytics.byRail.find((r: { key: string }) => r.key === 'subscription').revenue);
    };
    const paidBy = (id: string, amount: number) => ({
      ...invoice(id, amount),
      parent: { type: 'subscription_details', subscription_details: { subscription: 'sub_live' } },
    });
    const [start, startRevenue] = [await earned(), await revenue()];

    // Refunded (half) before its invoice.paid arrives: Stripe's invoice payments say which invoice it paid.
    stripeApi.payInvoice('in_refunded', 'pi_in_refunded');
    assert.equal((await deliver('charge.refunded', stripeApi.charge('pi_in_refunded', 1000, 500))).body.outcome, 'not_booked');
    assert.equal((await deliver('invoice.paid', paidBy('in_refunded', 1000))).body.outcome, 'subscription_paid');
    assert.equal(await earned(), start + 4_500_000n, 'half of 10 USD less 10 %');
    assert.equal((await deliver('charge.refunded', stripeApi.charge('pi_in_refunded', 1000, 500))).body.outcome, 'unchanged');
    assert.equal((await deliver('invoice.paid', paidBy('in_refunded', 1000))).body.outcome, 'subscription_paid');
    assert.equal(await earned(), start + 4_500_000n, 'restated and redelivered: taken once');

    // Disputed after it was booked; the dispute is won, and its created event is delivered again after that.
    stripeApi.payInvoice('in_disputed', 'pi_in_disputed');
    await deliver('invoice.paid', paidBy('in_disputed', 1000));
    assert.equal(await earned(), start + 13_500_000n);
    assert.equal((await deliver('charge.dispute.created', stripeApi.dispute('pi_in_disputed', 1000))).body.outcome, 'taken_back');
    assert.equal(await earned(), start + 4_500_000n);
    assert.equal((await deliver('charge.dispute.closed', stripeApi.dispute('pi_in_disputed', 1000, 'won'))).body.outcome, 'given_back');
    assert.equal((await deliver('charge.dispute.created', stripeApi.dispute('pi_in_disputed', 1000))).body.outcome, 'unchanged');
    assert.equal(await earned(), start + 13_500_000n);

    // A charge that names its invoice (older API versions) needs no question to Stripe.
    await deliver('invoice.paid', paidBy('in_named', 1000));
    const asked = () => stripeApi.requests.filter((r) => r.path === '/v1/invoice_payments').length;
    const before = asked();
    const named = { ...stripeApi.charge('pi_in_named', 1000, 1000), invoice: 'in_named' };
    assert.equal((await deliver('charge.refunded', named)).body.outcome, 'taken_back');
    assert.equal(await earned(), start + 13_500_000n, 'refunded in full: none of it');
    assert.equal(asked(), before);

    // Stripe not answering: 503 and nothing recorded, so the redelivery is handled; a payment of no invoice is unattributed.
    stripeApi.failInvoicePayments(true);
    const { payload } = stripeApi.event('charge.refunded', stripeApi.charge('pi_of_nothing', 1000, 1000));
    const post = async () =>
      served.api('POST', '/stripe/webhook', {
        body: payload,
        headers: { 'stripe-signature': await signedWebhook(new Stripe(stripeApi.apiKey), payload, WEBHOOK_SECRET) },
      });
    assert.equal((await post()).status, 503);
    stripeApi.failInvoicePayments(false);
    assert.equal((await post()).body.outcome, 'unattributed');
    assert.equal(await earned(), start + 13_500_000n);
    assert.equal(await revenue(), startRevenue + 15_000_000n, 'analytics: 5 + 10 + 0 USD of the three invoices');
  });
});
