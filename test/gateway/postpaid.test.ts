import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Stripe from 'stripe';
import { useSandbox } from '../helpers/chain.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { postToolCall, replayOnceDone } from '../helpers/gateway.js';
import { OIDC_CLIENT, startOidcProvider } from '../helpers/oidc.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import { eventually, serveOnSandbox } from '../helpers/served.js';
import { POSTGRES_URL, backends, freshSchema } from '../helpers/stores.js';
import { signedWebhook, startStripeApi } from '../helpers/stripe-api.js';

const chain = useSandbox({ isolate: false });
const ADMIN = 'admin-key-for-the-post-paid-tests-0123456789';
const WEBHOOK_SECRET = 'whsec_postpaid_tests_0123456789';
const PRICE = 20_000;
const RATE_LIMIT = 15;
type Rpc = {
  result?: { isError?: boolean; _meta?: Record<string, any> };
  error?: { code: number; message: string; data?: Record<string, any> };
};

for (const backend of backends)
  describe(`post-paid calls through the gateway (${backend.name})`, { skip: backend.skip }, () => {
    let served: Awaited<ReturnType<typeof serveOnSandbox>>;
    let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;
    let stripeApi: Awaited<ReturnType<typeof startStripeApi>>;
    let idp: Awaited<ReturnType<typeof startOidcProvider>>;
    const operators: { key: string; slug: string }[] = [];
    let seq = 0;

    async function deliver(type: string, object: object) {
      const { payload } = stripeApi.event(type, object);
      const stripe = new Stripe(stripeApi.apiKey);
      const res = await served.api('POST', '/stripe/webhook', {
        body: payload,
        headers: { 'stripe-signature': await signedWebhook(stripe, payload, WEBHOOK_SECRET) },
      });
      assert.equal(res.status, 200, res.text);
      return res.body;
    }
    /** A key of operator `op`, with a post-paid account on its server of `limitCalls` calls. */
    async function customer(limitCalls: number, op = 0) {
      const { key: opKey, slug } = operators[op]!;
      const made = await served.api('POST', '/operator/keys', { key: opKey, body: { name: `org ${++seq}` } });
      assert.equal(made.status, 201, made.text);
      const customerId = `cus_${backend.name}_${seq}`;
      const sub = stripeApi.subscribe(customerId);
      const body = {
        server: slug,
        customer: customerId,
        subscription: sub.id,
        meter: 'mcp_calls',
        creditLimitUsd: String((PRICE * limitCalls) / 1e6),
      };
      const linked = await served.api('POST', `/operator/keys/${made.body.id}/postpaid`, { key: opKey, body });
      assert.equal(linked.status, 201, linked.text);
      return { id: made.body.id as string, key: made.body.key as string, customer: customerId, subscription: sub.id, account: linked.body };
    }
    const call = async (key: string, tool = 'count', slug = operators[0]!.slug) =>
      (await (await postToolCall(`${served.url}/mcp/${slug}`, tool, { authorization: `Bearer ${key}` })).json()) as Rpc;
    /** Waits for the reporter to have sent `calls` meter events for `customer`, of PRICE each. */
    const reported = async (customerId: string, calls: number) => {
      await eventually(
        async () => stripeApi.meterUsage(customerId),
        (u) => u.events >= calls,
        'meter events',
      );
      assert.deepEqual(stripeApi.meterUsage(customerId), { events: calls, value: PRICE * calls });
    };
    /** A new operator and their server at `pp-<name>` (fields: custody and payee), pushed to `operators`: its index. */
    async function operatorWithServer(name: string, fields: Record<string, unknown>) {
      const made = await served.api('POST', '/admin/operators', { key: ADMIN, body: { email: `${name}@example.com`, name } });
      const slug = `pp-${name}`;
      const server = await served.api('POST', '/operator/servers', {
        key: made.body.key,
        body: { slug, name, upstream: `${upstream.url}/mcp`, plan: { type: 'per_call', default: String(PRICE / 1e6) }, ...fields },
      });
      assert.equal(server.status, 201, server.text);
      return operators.push({ key: made.body.key, slug }) - 1;
    }
    const unbilled = async (c: { id: string }, op = 0) =>
      (await served.api('GET', `/operator/keys/${c.id}/postpaid`, { key: operators[op]!.key })).body.accounts[0].unbilled;

    before(async () => {
      upstream = await startCounterUpstream();
      stripeApi = await startStripeApi();
      idp = await startOidcProvider();
      const store =
        backend.name === 'postgres'
          ? { store: { url: `${POSTGRES_URL}${POSTGRES_URL.includes('?') ? '&' : '?'}schema=${freshSchema()}&pool=4` } }
          : {};
      served = await serveOnSandbox(chain, {
        overrides: {
          ...store,
          credits: { stripeApiUrl: stripeApi.url, rateLimitPerMinute: RATE_LIMIT },
          operators: { allowPrivateUpstreams: true },
          postpaid: { reportIntervalSeconds: 1 },
        },
        secrets: { adminKey: ADMIN, stripeSecretKey: stripeApi.apiKey, stripeWebhookSecret: WEBHOOK_SECRET },
        endpoints: [
          {
            slug: 'configured',
            path: '/mcp/configured',
            upstream: { url: `${upstream.url}/mcp`, headers: {}, timeoutMs: 10_000 },
            plan: flatPlan(priceTableSchema.parse({ default: String(PRICE / 1e6) })),
            payTo: chain.sandbox.accounts.payees[1]!.address,
            challenge: 'tool-result',
          },
        ],
      });
      for (const name of ['alice', 'bob'])
        await operatorWithServer(name, { custody: 'direct', payTo: chain.sandbox.accounts.payees[0]!.address });
    });
    after(async () => {
      await served?.gateway.close();
      await upstream?.close();
      await stripeApi?.close();
      await idp?.close();
    });

    test('calls are billed to the Stripe customer: each result says what it added, and each becomes one meter event of its price', async () => {
      const org = await customer(10);
      const runs = upstream.runs();
      const entries: string[] = [];
      for (let i = 1; i <= 3; i++) {
        const { result } = await call(org.key);
        const receipt = result?._meta?.['turnpike/invoice'];
        assert.deepEqual(
          { ...receipt, entry: undefined },
          { charged: String(PRICE), unbilled: String(PRICE * i), creditLimit: String(PRICE * 10), entry: undefined },
        );
        entries.push(receipt.entry);
      }
      assert.equal(upstream.runs(), runs + 3);
      await reported(org.customer, 3);
      for (const entry of entries) assert.equal(stripeApi.meterEvents.get(entry)?.event_name, 'mcp_calls');
    });

    test('an attacker replaying one call under its Idempotency-Key, 6 copies at once and once more after: one run, one usage entry, one meter event', async () => {
      const org = await customer(10);
      const url = `${served.url}/mcp/${operators[0]!.slug}`;
      const headers = { authorization: `Bearer ${org.key}`, 'idempotency-key': 'pp-retry-1' };
      const runs = upstream.runs();
      const copies = await Promise.all(
        Array.from({ length: 6 }, async () => (await postToolCall(url, 'count', headers)).json() as Promise<Rpc>),
      );
      const answered = copies.filter((a) => a.result);
      assert.equal(new Set(answered.map((a) => a.result?._meta?.['turnpike/invoice']?.entry)).size, 1, JSON.stringify(copies));
      for (const refused of copies.filter((a) => !a.result)) assert.equal(refused.error?.data?.error, 'request_in_progress');
      const again = await postToolCall(url, 'count', headers);
      assert.equal(again.headers.get('idempotent-replayed'), 'true');
      assert.deepEqual(await again.json(), answered[0]);
      assert.equal(upstream.runs(), runs + 1);
      assert.equal(await unbilled(org), String(PRICE));
      const reused = (await (await postToolCall(url, 'other', headers)).json()) as Rpc;
      assert.equal(reused.error?.data?.error, 'idempotency_key_reused');
      assert.equal(upstream.runs(), runs + 1);
      await reported(org.customer, 1);
    });

    test('a caller who hangs up during a post-paid call is billed once for the result the tool produced, and gets it back with the same Idempotency-Key', async () => {
      const org = await customer(10);
      const url = `${served.url}/mcp/${operators[0]!.slug}`;
      const headers = {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': '2025-06-18',
        authorization: `Bearer ${org.key}`,
        'idempotency-key': 'pp-hang-up-1',
      };
      const body = JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'slow', arguments: {} } });
      const runs = upstream.runs();
      await upstream.hangUpWhileSlow(url, { method: 'POST', headers, body });
      assert.equal(upstream.runs(), runs + 1, 'the tool ran to its result');
      const again = await replayOnceDone(url, { method: 'POST', headers, body });
      assert.equal(again.response.headers.get('idempotent-replayed'), 'true');
      const replayed = again.body as Rpc & { result?: { content?: { text: string }[] } };
      assert.equal(replayed.result?.content?.[0]?.text, String(runs + 1));
      assert.equal(replayed.result?._meta?.['turnpike/invoice']?.charged, String(PRICE));
      assert.equal(upstream.runs(), runs + 1);
      assert.equal(await unbilled(org), String(PRICE), 'billed once, not voided');
      await reported(org.customer, 1);
    });

    test('a post-paid call is its operator’s revenue under rail invoice in analytics; the balance counts it invoiced, never withdrawable or payable', async () => {
      const op = await operatorWithServer('carol', { custody: 'platform' });
      const { key } = operators[op]!;
      const org = await customer(10, op);
      assert.ok((await call(org.key, 'count', 'pp-carol')).result?._meta?.['turnpike/invoice']);
      const byRail = await eventually(
        async () => (await served.api('GET', '/operator/analytics', { key: key })).body.byRail as Record<string, string>[],
        (rows) => rows.some((r) => r.key === 'invoice' && r.revenue === String(PRICE)),
        'the invoice charge earned',
      );
      assert.deepEqual(
        byRail.map((r) => [r.key, r.calls, r.paidCalls, r.revenue]),
        [['invoice', 1, 1, String(PRICE)]],
      );
      const balance = (await served.api('GET', '/operator/balance', { key: key })).body;
      assert.equal(balance.invoiced, byRail[0]!.operatorShare);
      assert.ok(BigInt(balance.invoiced as string) > 0n);
      assert.deepEqual([balance.usdcEarned, balance.usdcAvailable, balance.fiatEarned, balance.fiatAvailable], ['0', '0', '0', '0']);
    });

    test('a call whose tool fails is not billed', async () => {
      const org = await customer(10);
      const { result } = await call(org.key, 'fail');
      assert.equal(result?.isError, true);
      assert.equal(result?._meta?.['turnpike/invoice'], undefined);
      assert.equal(await unbilled(org), '0');
      await new Promise((r) => setTimeout(r, 1500));
      assert.deepEqual(stripeApi.meterUsage(org.customer), { events: 0, value: 0 });
    });

    test('the credit limit refuses the call that would pass it, with the numbers, and nothing reaches the upstream', async () => {
      const org = await customer(2);
      assert.ok((await call(org.key)).result?._meta?.['turnpike/invoice']);
      assert.ok((await call(org.key)).result?._meta?.['turnpike/invoice']);
      const runs = upstream.runs();
      const refused = await call(org.key);
      assert.equal(refused.error?.data?.error, 'credit_limit_reached', JSON.stringify(refused));
      assert.deepEqual([refused.error?.data?.unbilled, refused.error?.data?.creditLimit], [String(PRICE * 2), String(PRICE * 2)]);
      assert.equal(upstream.runs(), runs);
    });

    test('an attacker racing 12 calls at the limit’s edge gets exactly the 3 the limit covers; the upstream runs 3 times', async () => {
      const org = await customer(3);
      const runs = upstream.runs();
      const answers = await Promise.all(Array.from({ length: 12 }, () => call(org.key)));
      assert.equal(answers.filter((a) => a.result?._meta?.['turnpike/invoice']).length, 3);
      assert.equal(answers.filter((a) => a.error?.data?.error === 'credit_limit_reached').length, 9);
      assert.equal(upstream.runs(), runs + 3);
      await reported(org.customer, 3);
    });

    test('the per-key rate limit holds on this rail too: past it, 429 with Retry-After and nothing forwarded or recorded', async () => {
      // All in one minute's window: a burst that spans the turn of the minute (slow on a loaded machine) is made again, with a new key.
      const minute = () => Math.floor(Date.now() / 60_000);
      const burst = async () => {
        const org = await customer(100);
        const first = minute();
        const answers = await Promise.all(
          Array.from({ length: RATE_LIMIT + 3 }, () =>
            postToolCall(`${served.url}/mcp/${operators[0]!.slug}`, 'count', { 'x-api-key': org.key }),
          ),
        );
        return minute() === first ? { org, answers } : undefined;
      };
      let made: Awaited<ReturnType<typeof burst>>;
      do made = await burst();
      while (!made);
      const { org, answers } = made;
      const limited = answers.filter((a) => a.status === 429);
      assert.equal(limited.length, 3);
      assert.ok(Number(limited[0]!.headers.get('retry-after')) >= 1);
      assert.equal(((await limited[0]!.json()) as Rpc).error?.data?.error, 'rate_limited');
      assert.equal(await unbilled(org), String(PRICE * RATE_LIMIT));
    });

    test('a failed payment blocks the next call with an error naming the billing portal; the paid invoice lets calls through again', async () => {
      const org = await customer(10);
      assert.ok((await call(org.key)).result);
      const invoice = {
        id: `in_${seq}`,
        object: 'invoice',
        parent: { type: 'subscription_details', subscription_details: { subscription: org.subscription } },
      };
      assert.equal((await deliver('invoice.payment_failed', invoice)).outcome, 'postpaid_updated');
      const runs = upstream.runs();
      const refused = await call(org.key);
      assert.equal(refused.error?.data?.error, 'account_past_due');
      assert.match(refused.error!.message, new RegExp(`POST ${served.url}/credits/portal`));
      assert.equal(refused.error?.data?.portal, `${served.url}/credits/portal`);
      assert.equal(upstream.runs(), runs);
      assert.equal((await deliver('invoice.paid', { ...invoice, amount_paid: 2 })).outcome, 'postpaid_updated');
      assert.ok((await call(org.key)).result?._meta?.['turnpike/invoice']);
    });

    /** A Stripe invoice of `org`'s subscription. */
    const invoiceOf = (org: { subscription: string }, id: string, fields: object = {}) => ({
      id,
      object: 'invoice',
      parent: { type: 'subscription_details', subscription_details: { subscription: org.subscription } },
      ...fields,
    });

    test('with two failed invoices, paying the first still refuses calls, also once Stripe says the subscription is active; voiding the second (nothing owed) lets them through', async () => {
      const org = await customer(10);
      const [first, second] = [invoiceOf(org, `in_${seq}_a`), invoiceOf(org, `in_${seq}_b`)];
      assert.equal((await deliver('invoice.payment_failed', first)).outcome, 'postpaid_updated');
      assert.equal((await deliver('invoice.payment_failed', second)).outcome, 'postpaid_updated');
      assert.equal((await deliver('invoice.paid', { ...first, amount_paid: 2 })).outcome, 'postpaid_updated');
      const runs = upstream.runs();
      assert.equal((await call(org.key)).error?.data?.error, 'account_past_due');
      const sub = stripeApi.subscriptions.get(org.subscription)!;
      await deliver('customer.subscription.updated', { ...sub, status: 'active' });
      const refused = await call(org.key);
      assert.equal(refused.error?.data?.error, 'account_past_due');
      assert.equal(refused.error?.data?.unpaidInvoices, 1);
      assert.equal(upstream.runs(), runs);
      assert.equal((await deliver('invoice.voided', { ...second, status: 'void' })).outcome, 'postpaid_updated');
      assert.ok((await call(org.key)).result?._meta?.['turnpike/invoice']);
    });

    test('at a new period the credit limit still counts the last period’s usage: the next call is refused until the invoice billing it is paid', async () => {
      const org = await customer(2);
      assert.ok((await call(org.key)).result?._meta?.['turnpike/invoice']);
      assert.ok((await call(org.key)).result?._meta?.['turnpike/invoice']);
      assert.equal((await call(org.key)).error?.data?.error, 'credit_limit_reached');
      // The period ends on the next whole second (Stripe's unit), after the calls above.
      const sub = stripeApi.subscriptions.get(org.subscription) as ReturnType<typeof stripeApi.subscribe>;
      const start = sub.items.data[0]!.current_period_start;
      const end = Math.ceil(Date.now() / 1000);
      while (Date.now() < end * 1000) await new Promise((r) => setTimeout(r, 50));
      const item = { ...sub.items.data[0]!, current_period_start: end, current_period_end: end + 30 * 86_400 };
      assert.equal(
        (await deliver('customer.subscription.updated', { ...sub, items: { ...sub.items, data: [item] } })).outcome,
        'postpaid_updated',
      );
      const runs = upstream.runs();
      const refused = await call(org.key);
      assert.equal(refused.error?.data?.error, 'credit_limit_reached');
      assert.equal(refused.error?.data?.unbilled, String(PRICE * 2));
      assert.equal(upstream.runs(), runs);
      const invoice = invoiceOf(org, `in_${seq}_period`, { period_start: start, period_end: end, amount_paid: 4 });
      assert.equal((await deliver('invoice.paid', invoice)).outcome, 'postpaid_updated');
      const shown = (await served.api('GET', `/operator/keys/${org.id}/postpaid`, { key: operators[0]!.key })).body.accounts[0];
      assert.deepEqual([shown.unbilled, shown.paidThrough], ['0', new Date(end * 1000).toISOString()]);
      assert.ok((await call(org.key)).result?._meta?.['turnpike/invoice']);
    });

    test('a deleted subscription blocks the next call; its redelivery is recognised', async () => {
      const org = await customer(10);
      const sub = { ...stripeApi.subscriptions.get(org.subscription)!, status: 'canceled' };
      const { payload } = stripeApi.event('customer.subscription.deleted', sub);
      const signed = async () =>
        served.api('POST', '/stripe/webhook', {
          body: payload,
          headers: { 'stripe-signature': await signedWebhook(new Stripe(stripeApi.apiKey), payload, WEBHOOK_SECRET) },
        });
      assert.equal((await signed()).body.outcome, 'postpaid_updated');
      assert.equal((await signed()).body.outcome, 'duplicate_event');
      const refused = await call(org.key);
      assert.equal(refused.error?.data?.error, 'account_canceled');
    });

    test('POST /credits/portal opens a Stripe Customer Portal session for the key’s customer; a key without an account gets 404', async () => {
      const org = await customer(10);
      const portal = await served.api('POST', '/credits/portal', { key: org.key });
      assert.equal(portal.status, 201, portal.text);
      assert.match(portal.body.url, /^https:\/\/billing\.stripe\.com\/p\/session\//);
      assert.equal(portal.body.customer, org.customer);
      const sent = stripeApi.requests.filter((r) => r.path === '/v1/billing_portal/sessions').at(-1);
      assert.equal(sent?.body.customer, org.customer);
      const plain = await served.api('POST', '/admin/keys', { key: ADMIN, body: { name: 'prepaid only' } });
      assert.equal((await served.api('POST', '/credits/portal', { key: plain.body.key })).status, 404);
      assert.equal((await served.api('POST', '/credits/portal', {})).status, 401);
    });

    test('an OAuth caller whose subject is linked to the key is billed to the key’s account', async () => {
      const org = await customer(10);
      const { key: opKey, slug } = operators[0]!;
      const oauth = { issuer: idp.issuer, scopes: [], required: false };
      assert.equal((await served.api('PATCH', `/operator/servers/${slug}`, { key: opKey, body: { oauth } })).status, 200);
      const subject = { issuer: idp.issuer, subject: OIDC_CLIENT.id };
      assert.equal((await served.api('POST', `/admin/keys/${org.id}/subjects`, { key: ADMIN, body: subject })).status, 201);
      try {
        const token = await idp.token(`${served.url}/mcp/${slug}`);
        const res = await postToolCall(`${served.url}/mcp/${slug}`, 'count', { authorization: `Bearer ${token}` });
        const { result } = (await res.json()) as Rpc;
        assert.equal(result?._meta?.['turnpike/invoice']?.charged, String(PRICE));
        assert.equal(await unbilled(org), String(PRICE));
        await reported(org.customer, 1);
      } finally {
        await served.api('DELETE', `/admin/keys/${org.id}/subjects?issuer=${encodeURIComponent(idp.issuer)}&subject=${OIDC_CLIENT.id}`, {
          key: ADMIN,
        });
        await served.api('PATCH', `/operator/servers/${slug}`, { key: opKey, body: { oauth: null } });
      }
    });

    test('the admin opens accounts on any server, a configured one included, and is told which server does not exist', async () => {
      const made = await served.api('POST', '/admin/keys', { key: ADMIN, body: { name: 'configured org' } });
      const sub = stripeApi.subscribe('cus_configured');
      const body = { server: 'configured', customer: 'cus_configured', subscription: sub.id, meter: 'mcp_calls', creditLimitUsd: '1' };
      const linked = await served.api('POST', `/admin/keys/${made.body.id}/postpaid`, { key: ADMIN, body });
      assert.equal(linked.status, 201, linked.text);
      assert.equal(linked.body.serverId, 'configured');
      const { result } = await call(made.body.key, 'count', 'configured');
      assert.equal(result?._meta?.['turnpike/invoice']?.charged, String(PRICE));
      const again = await served.api('POST', `/admin/keys/${made.body.id}/postpaid`, { key: ADMIN, body });
      assert.equal(again.body.error, 'postpaid_account_exists');
      const nowhere = await served.api('POST', `/admin/keys/${made.body.id}/postpaid`, {
        key: ADMIN,
        body: { ...body, server: 'nowhere' },
      });
      assert.equal(nowhere.body.error, 'server_not_found');
      await reported('cus_configured', 1);
    });

    test('a revoked key cannot bill: 401, nothing forwarded, nothing recorded', async () => {
      const org = await customer(10);
      await served.api('POST', `/operator/keys/${org.id}/revoke`, { key: operators[0]!.key });
      const runs = upstream.runs();
      const refused = await call(org.key);
      assert.equal(refused.error?.data?.error, 'key_revoked');
      assert.equal(upstream.runs(), runs);
      assert.equal(await unbilled(org), '0');
    });

    test('another operator’s customer cannot bill on this server, and an operator cannot link another’s key or server', async () => {
      const theirs = await customer(10, 1);
      const runs = upstream.runs();
      const refused = await call(theirs.key);
      assert.equal(refused.error?.data?.error, 'out_of_scope');
      assert.equal(upstream.runs(), runs);
      assert.equal(await unbilled(theirs, 1), '0');
      assert.ok((await call(theirs.key, 'count', operators[1]!.slug)).result?._meta?.['turnpike/invoice'], 'on its own server it bills');
      const sub = stripeApi.subscribe('cus_intruder');
      const body = { server: operators[0]!.slug, customer: 'cus_intruder', subscription: sub.id, meter: 'm', creditLimitUsd: '1' };
      const foreignKey = await served.api('POST', `/operator/keys/${theirs.id}/postpaid`, { key: operators[0]!.key, body });
      assert.equal(foreignKey.status, 404);
      const mine = await served.api('POST', '/operator/keys', { key: operators[0]!.key, body: { name: 'mine' } });
      const foreignServer = await served.api('POST', `/operator/keys/${mine.body.id}/postpaid`, {
        key: operators[0]!.key,
        body: { ...body, server: operators[1]!.slug },
      });
      assert.equal(foreignServer.status, 404);
      const wrongCustomer = await served.api('POST', `/operator/keys/${mine.body.id}/postpaid`, {
        key: operators[0]!.key,
        body: { ...body, customer: 'cus_someone_else' },
      });
      assert.equal(wrongCustomer.body.error, 'subscription_invalid');
    });

    test('/health reports billing: the last webhook, the last Stripe success, the usage waiting', async () => {
      const health = await served.api('GET', '/health');
      assert.equal(health.body.billing?.ok, true, health.text);
      assert.equal(health.body.billing.staleUnreportedUsage, 0);
      assert.equal(typeof health.body.billing.lastStripeSuccessAgeSeconds, 'number');
      assert.equal(typeof health.body.billing.lastWebhookAgeSeconds, 'number');
    });
  });
