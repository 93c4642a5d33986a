import assert from 'node:assert/strict';
import { after, before, describe, mock, test } from 'node:test';
import { createLogger } from '../../src/log/logger.js';
import { generateApiKey } from '../../src/rails/credits/api-keys.js';
import type { Credential } from '../../src/rails/credits/api-keys.js';
import { createCredits } from '../../src/rails/credits/credits.js';
import { payerOf } from '../../src/rails/credits/rail.js';
import { NO_ACCOUNTS_TTL_MS, billedServers } from '../../src/rails/invoice/rail.js';
import { usageReporter } from '../../src/rails/invoice/reporter.js';
import type { PaidCall } from '../../src/rails/rail.js';
import { stripeClient } from '../../src/rails/stripe/stripe-client.js';
import type { Store } from '../../src/store/store.js';
import { backends } from '../helpers/stores.js';
import { startStripeApi } from '../helpers/stripe-api.js';

const logger = createLogger({ level: 'silent', format: 'json' });
const PRICE = 20_000n;

for (const backend of backends)
  describe(`post-paid accounts and usage reporting (${backend.name})`, { skip: backend.skip }, () => {
    // Made here, not in a hook: the SQLite file's directory lives as long as the suite (a third instance opens it later).
    const open: () => Promise<Store> = backend.shared();
    let stores: Store[];
    let stripeApi: Awaited<ReturnType<typeof startStripeApi>>;
    let seq = 0;
    const reporterOf = (store: Store) =>
      usageReporter({ stripe: stripeClient(stripeApi.apiKey, stripeApi.url), store, logger, intervalMs: 60_000, batchSize: 4 });

    /** A key with a post-paid account on a server of its own, limited to `limitCalls` calls at PRICE. */
    async function account(limitCalls: number, status = 'active', on = stores[0]!, serverId = `srv_${seq + 1}`) {
      const { id, hash } = generateApiKey();
      assert.ok((await on.credits.createKey({ id, hash, name: 'org' })).created);
      const customer = `cus_${backend.name}${++seq}`;
      const linked = await on.postpaid.link({
        keyId: id,
        serverId,
        customer,
        subscription: `sub_${backend.name}${seq}`,
        meter: 'mcp_usage',
        creditLimit: PRICE * BigInt(limitCalls),
        periodStart: Date.now() - 60_000,
        status,
        statusAt: Date.now() - 60_000,
      });
      assert.ok(linked.created);
      return { keyId: id, serverId, customer, subscription: `sub_${backend.name}${seq}`, account: linked.account };
    }
    /** `n` delivered calls of an account: their entry ids. */
    async function calls(a: { keyId: string; serverId: string }, n: number) {
      const ids: string[] = [];
      for (let i = 0; i < n; i++) {
        const usage = await stores[0]!.postpaid.authorize({ ...a, tool: 'search', amount: PRICE });
        assert.ok(usage.ok, usage.ok ? '' : `${usage.reason} ${usage.account?.status} ${usage.account?.unbilled}`);
        ids.push(usage.entry.id);
      }
      await stores[0]!.postpaid.close(ids);
      return ids;
    }
    const event = (subscription: string, change: Parameters<Store['postpaid']['applyEvent']>[0]['change'], eventAt = Date.now()) => ({
      eventId: `evt_${Math.random().toString(36).slice(2)}`,
      type: 'test',
      subscription,
      eventAt,
      change,
    });

    before(async () => {
      stores = [await open(), await open()];
      stripeApi = await startStripeApi();
    });
    after(async () => {
      await Promise.all(stores.map((s) => s.close()));
      await stripeApi.close();
    });

    test('N calls raced from two instances at the credit limit’s edge: exactly the calls the limit covers are recorded, never more', async () => {
      const a = await account(5);
      const results = await Promise.all(
        Array.from({ length: 24 }, (_, i) => stores[i % 2]!.postpaid.authorize({ ...a, tool: 'search', amount: PRICE })),
      );
      assert.equal(results.filter((r) => r.ok).length, 5);
      assert.deepEqual(new Set(results.filter((r) => !r.ok).map((r) => !r.ok && r.reason)), new Set(['credit_limit']));
      assert.equal((await stores[1]!.postpaid.account(a.keyId, a.serverId))!.unbilled, PRICE * 5n);
    });

    test('one Idempotency-Key request raced from two instances writes one usage entry; voiding it lets a retry record again', async () => {
      const a = await account(10);
      const request = { idempotencyKey: 'retry-1', bodyHash: 'h1' };
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, i) => stores[i % 2]!.postpaid.authorize({ ...a, tool: 'search', amount: PRICE, request })),
      );
      const recorded = results.filter((r) => r.ok);
      assert.equal(recorded.length, 1);
      assert.deepEqual(new Set(results.filter((r) => !r.ok).map((r) => !r.ok && r.reason)), new Set(['request_in_progress']));
      assert.equal((await stores[1]!.postpaid.account(a.keyId, a.serverId))!.unbilled, PRICE, 'the refused copies added nothing');
      const entry = recorded[0]!.ok ? recorded[0]!.entry.id : '';
      assert.deepEqual(await stores[1]!.credits.request(a.keyId, 'retry-1'), { bodyHash: 'h1', usageId: entry });
      await stores[0]!.postpaid.void(entry);
      assert.equal(await stores[1]!.credits.request(a.keyId, 'retry-1'), undefined, 'a failed call’s request is forgotten');
      assert.ok((await stores[1]!.postpaid.authorize({ ...a, tool: 'search', amount: PRICE, request })).ok);
    });

    test('a server without accounts is looked up once per TTL, not per call; an account linked here bills at once, one linked by another instance within the TTL', async () => {
      let asked = 0;
      const postpaid = stores[0]!.postpaid;
      const billed = billedServers({ ...postpaid, hasAccounts: (id) => (asked++, postpaid.hasAccounts(id)) }, 300);
      const serverId = `srv_hot_${backend.name}`;
      // Only Date moves, by hand: "within the TTL" must not depend on how long 50 reads take on a loaded machine.
      mock.timers.enable({ apis: ['Date'], now: Date.now() });
      try {
        for (let i = 0; i < 50; i++) assert.equal(await billed.has(serverId), false);
        assert.equal(asked, 1);
        await account(1, 'active', stores[1]!, serverId);
        mock.timers.tick(299);
        assert.equal(await billed.has(serverId), false, 'within the TTL, not yet seen');
        mock.timers.tick(51);
        assert.equal(await billed.has(serverId), true, 'seen once the TTL passed');
        for (let i = 0; i < 50; i++) await billed.has(serverId);
        assert.equal(asked, 2, 'a server with accounts is remembered');
        const here = `srv_here_${backend.name}`;
        assert.equal(await billed.has(here), false);
        await account(1, 'active', stores[0]!, here);
        billed.linked(here);
        assert.equal(await billed.has(here), true, 'linked in this process: at once');
      } finally {
        mock.timers.reset();
      }
      assert.equal(NO_ACCOUNTS_TTL_MS, 1_000, 'the bound the README documents');
    });

    test('a key revoked or suspended on another instance bills nothing from its next call, though this instance’s rail remembers the key', async () => {
      const credits = createCredits({ store: stores[0]!, tokenSecret: 'a-token-secret-for-the-post-paid-store-tests' });
      const { secret, key } = await credits.createKey({ name: 'leaked' });
      const a = { keyId: key.id, serverId: `srv_revoked_${++seq}` };
      const linked = await stores[0]!.postpaid.link({
        ...a,
        customer: `cus_${backend.name}_revoked${seq}`,
        subscription: `sub_${backend.name}_revoked${seq}`,
        meter: 'mcp_usage',
        creditLimit: PRICE * 10n,
        periodStart: Date.now() - 60_000,
        status: 'active',
        statusAt: Date.now() - 60_000,
      });
      assert.ok(linked.created);
      const callWith = () =>
        ({ request: new Request('http://turnpike.test/mcp', { headers: { authorization: `Bearer ${secret}` } }) }) as PaidCall;
      assert.equal((await payerOf(credits, callWith())).key.id, key.id);
      assert.ok((await stores[0]!.postpaid.authorize({ ...a, tool: 'search', amount: PRICE })).ok);

      for (const status of ['suspended', 'revoked'] as const) {
        await stores[1]!.credits.setStatus(key.id, status);
        // This instance was not told: its rail still takes the key as it read it (KEY_MAX_AGE_MS).
        assert.equal((await payerOf(credits, callWith())).key.status, 'active');
        const refused = await stores[0]!.postpaid.authorize({ ...a, tool: 'search', amount: PRICE });
        assert.deepEqual(refused.ok ? 'billed' : refused.reason, status === 'revoked' ? 'key_revoked' : 'key_suspended');
      }
      assert.equal((await stores[1]!.postpaid.account(a.keyId, a.serverId))!.unbilled, PRICE, 'only the call made before');
    });

    test('a call’s caller is resolved once, whichever rails ask, a refused credential included', async () => {
      const credits = createCredits({ store: stores[0]!, tokenSecret: 'a-token-secret-for-the-post-paid-store-tests' });
      const { secret } = await credits.createKey({ name: 'caller' });
      let lookups = 0;
      const counted = { ...credits, authenticate: (c: Credential) => (lookups++, credits.authenticate(c)) };
      const callWith = (key: string) =>
        ({ request: new Request('http://turnpike.test/mcp', { headers: { authorization: `Bearer ${key}` } }) }) as PaidCall;
      const call = callWith(secret);
      const [first, second] = await Promise.all([payerOf(counted, call), payerOf(counted, call)]);
      assert.equal(first, second);
      assert.equal(lookups, 1);
      const bad = callWith('tp_notakeynotakeynotakeynotakeynotakeynotakey0');
      await assert.rejects(payerOf(counted, bad), /not known/);
      await assert.rejects(payerOf(counted, bad), /not known/);
      assert.equal(lookups, 2);
    });

    test('a call that failed is voided once: it frees its share of the limit and is never reported', async () => {
      const a = await account(1);
      const usage = await stores[0]!.postpaid.authorize({ ...a, tool: 'search', amount: PRICE });
      assert.ok(usage.ok);
      assert.equal((await stores[0]!.postpaid.authorize({ ...a, tool: 'search', amount: PRICE })).ok, false);
      await stores[0]!.postpaid.void(usage.entry.id);
      await stores[1]!.postpaid.void(usage.entry.id);
      await stores[0]!.postpaid.close([usage.entry.id]);
      assert.equal((await stores[0]!.postpaid.account(a.keyId, a.serverId))!.unbilled, 0n);
      assert.ok(!(await stores[0]!.postpaid.unreported(1000)).some((u) => u.id === usage.entry.id));
      assert.equal((await stores[0]!.postpaid.authorize({ ...a, tool: 'search', amount: PRICE })).ok, true);
    });

    test('Stripe’s events set what an account may do: once per event, never undone by an older one, past due until paid', async () => {
      const a = await account(10);
      const failed = event(a.subscription, { kind: 'payment_failed', invoice: 'in_a' });
      assert.equal(await stores[0]!.postpaid.applyEvent(failed), 'postpaid_updated');
      assert.equal(await stores[1]!.postpaid.applyEvent(failed), 'duplicate_event');
      const refused = await stores[0]!.postpaid.authorize({ ...a, tool: 'search', amount: PRICE });
      assert.equal(!refused.ok && refused.reason, 'not_entitled');
      // An update older than the failure does not make the account active again.
      const stale = event(a.subscription, { kind: 'status', status: 'active' }, Date.now() - 30_000);
      assert.equal(await stores[0]!.postpaid.applyEvent(stale), 'postpaid_unchanged');
      assert.equal((await stores[0]!.postpaid.account(a.keyId, a.serverId))!.status, 'past_due');
      assert.equal(
        await stores[0]!.postpaid.applyEvent(event(a.subscription, { kind: 'paid', invoice: 'in_a' }, Date.now() + 1000)),
        'postpaid_updated',
      );
      assert.equal((await stores[0]!.postpaid.authorize({ ...a, tool: 'search', amount: PRICE })).ok, true);
      await stores[0]!.postpaid.applyEvent(event(a.subscription, { kind: 'status', status: 'canceled' }, Date.now() + 2000));
      // A paid invoice does not bring a cancelled subscription back.
      const later = event(a.subscription, { kind: 'paid', invoice: 'in_b' }, Date.now() + 3000);
      assert.equal(await stores[0]!.postpaid.applyEvent(later), 'postpaid_unchanged');
      assert.equal((await stores[0]!.postpaid.account(a.keyId, a.serverId))!.status, 'canceled');
      const canceled = await stores[0]!.postpaid.authorize({ ...a, tool: 'search', amount: PRICE });
      assert.equal(!canceled.ok && canceled.account?.status, 'canceled');
      assert.equal(await stores[0]!.postpaid.applyEvent(event('sub_nobody', { kind: 'paid', invoice: 'in_c' })), undefined);
    });

    test('a paid invoice settles only itself: the account stays past due while another failed invoice is unpaid, whatever status Stripe gives the subscription', async () => {
      const a = await account(10);
      const apply = (change: Parameters<typeof event>[1], at = Date.now()) =>
        stores[0]!.postpaid.applyEvent(event(a.subscription, change, at));
      const refusal = async () => {
        const r = await stores[1]!.postpaid.authorize({ ...a, tool: 'search', amount: PRICE });
        return r.ok ? 'ok' : r.reason;
      };
      assert.equal(await apply({ kind: 'payment_failed', invoice: 'in_1' }), 'postpaid_updated');
      assert.equal(await apply({ kind: 'payment_failed', invoice: 'in_2' }), 'postpaid_updated');
      assert.equal(await apply({ kind: 'payment_failed', invoice: 'in_2' }), 'postpaid_unchanged', 'a retried failure counts once');
      assert.equal(await apply({ kind: 'paid', invoice: 'in_1' }, Date.now() + 1000), 'postpaid_updated');
      assert.equal(await refusal(), 'not_entitled');
      assert.deepEqual(
        (({ status, unpaidInvoices }) => ({ status, unpaidInvoices }))((await stores[0]!.postpaid.account(a.keyId, a.serverId))!),
        { status: 'past_due', unpaidInvoices: 1 },
      );
      // Stripe's subscription status follows its latest invoice only: `active` does not settle in_2.
      assert.equal(await apply({ kind: 'status', status: 'active' }, Date.now() + 2000), 'postpaid_updated');
      assert.equal(await refusal(), 'not_entitled');
      // A failure of the paid in_1 delivered late changes nothing.
      assert.equal(await apply({ kind: 'payment_failed', invoice: 'in_1' }, Date.now() + 3000), 'postpaid_unchanged');
      assert.equal(await apply({ kind: 'paid', invoice: 'in_2' }, Date.now() + 4000), 'postpaid_updated');
      assert.equal(await refusal(), 'ok');
      // Paid before its failure was delivered: the late failure changes nothing.
      assert.equal(await apply({ kind: 'paid', invoice: 'in_3' }, Date.now() + 5000), 'postpaid_unchanged');
      assert.equal(await apply({ kind: 'payment_failed', invoice: 'in_3' }, Date.now() + 4500), 'postpaid_unchanged');
      assert.equal(await refusal(), 'ok');
    });

    test('a new billing period does not free the credit limit: the last period’s usage counts until the invoice billing it is paid', async () => {
      const a = await account(2);
      await calls(a, 2);
      assert.equal((await stores[0]!.postpaid.authorize({ ...a, tool: 'search', amount: PRICE })).ok, false);
      const periodEnd = Date.now() + 1;
      await new Promise((r) => setTimeout(r, 5));
      const renewed = event(a.subscription, { kind: 'status', status: 'active', periodStart: periodEnd });
      assert.equal(await stores[0]!.postpaid.applyEvent(renewed), 'postpaid_updated');
      assert.equal((await stores[0]!.postpaid.account(a.keyId, a.serverId))!.unbilled, PRICE * 2n);
      const refused = await stores[1]!.postpaid.authorize({ ...a, tool: 'search', amount: PRICE });
      assert.equal(!refused.ok && refused.reason, 'credit_limit');
      // An invoice of an earlier period frees nothing more; the one billing the period just ended frees its usage.
      assert.equal(
        await stores[0]!.postpaid.applyEvent(event(a.subscription, { kind: 'paid', invoice: 'in_0', periodEnd: periodEnd - 120_000 })),
        'postpaid_unchanged',
      );
      assert.equal((await stores[0]!.postpaid.authorize({ ...a, tool: 'search', amount: PRICE })).ok, false);
      assert.equal(
        await stores[0]!.postpaid.applyEvent(event(a.subscription, { kind: 'paid', invoice: 'in_1', periodEnd })),
        'postpaid_updated',
      );
      assert.equal((await stores[0]!.postpaid.account(a.keyId, a.serverId))!.unbilled, 0n);
      await calls(a, 2);
    });

    test('delivered calls become one meter event each: the entry id as identifier, the price in micro-USD as value, reported once', async () => {
      const a = await account(20);
      const ids = await calls(a, 7);
      const reporter = reporterOf(stores[0]!);
      assert.ok((await reporter.report()) >= 7);
      assert.deepEqual(stripeApi.meterUsage(a.customer), { events: 7, value: Number(PRICE) * 7 });
      for (const id of ids)
        assert.deepEqual(
          { ...stripeApi.meterEvents.get(id), timestamp: 0 },
          { event_name: 'mcp_usage', customer: a.customer, value: Number(PRICE), timestamp: 0 },
        );
      assert.equal(await reporter.report(), 0);
      assert.equal(stripeApi.meterEventRequests.filter((r) => ids.includes(r)).length, 7);
      await reporter.stop();
    });

    test('a reporter that dies between Stripe taking a batch and marking it: the next instance reports it again and Stripe counts it once', async () => {
      const dying = await open();
      const a = await account(20);
      const ids = await calls(a, 6);
      const release = stripeApi.holdMeterEventAnswers();
      const round = reporterOf(dying).report();
      // Its first batch (4 entries) is taken by Stripe, whose answers are held.
      while (stripeApi.meterUsage(a.customer).events < 4) await new Promise((r) => setTimeout(r, 20));
      await dying.close(); // the crash: Stripe has the batch, the store never hears of it
      release();
      await assert.rejects(round);
      assert.ok(stripeApi.meterUsage(a.customer).events >= 1);
      assert.ok(
        (await stores[0]!.postpaid.unreported(1000)).some((u) => ids.includes(u.id)),
        'nothing was marked',
      );
      const next = reporterOf(stores[1]!);
      await next.report();
      assert.deepEqual(stripeApi.meterUsage(a.customer), { events: 6, value: Number(PRICE) * 6 });
      assert.ok(!(await stores[0]!.postpaid.unreported(1000)).some((u) => ids.includes(u.id)));
      await next.stop();
    });

    test('Stripe down: nothing is marked, /health counts the waiting usage; once it recovers everything is reported, nothing twice', async () => {
      const a = await account(20);
      const ids = await calls(a, 5);
      const reporter = reporterOf(stores[0]!);
      stripeApi.meterEventsDown(true);
      await reporter.report();
      stripeApi.meterEventsDown(false);
      assert.deepEqual(stripeApi.meterUsage(a.customer), { events: 0, value: 0 });
      const waiting = await stores[0]!.postpaid.billing(Date.now() + 1);
      assert.ok(waiting.staleUnreported >= 5, JSON.stringify(waiting));
      await reporter.report();
      assert.deepEqual(stripeApi.meterUsage(a.customer), { events: 5, value: Number(PRICE) * 5 });
      assert.ok(!(await stores[0]!.postpaid.unreported(1000)).some((u) => ids.includes(u.id)));
      assert.ok((await stores[0]!.postpaid.billing(Date.now())).lastStripeOkAt! > Date.now() - 5_000);
      await reporter.stop();
    });

    test('two instances reporting at once: one holds the lease, each entry is sent to Stripe once', async () => {
      const a = await account(30);
      const ids = await calls(a, 9);
      const reporters = [reporterOf(stores[0]!), reporterOf(stores[1]!)];
      await Promise.all(reporters.map((r) => r.report()));
      assert.deepEqual(stripeApi.meterUsage(a.customer), { events: 9, value: Number(PRICE) * 9 });
      for (const id of ids) assert.equal(stripeApi.meterEventRequests.filter((r) => r === id).length, 1, id);
      await Promise.all(reporters.map((r) => r.stop()));
    });
  });
