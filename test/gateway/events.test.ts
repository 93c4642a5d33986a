import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { x402Client } from '@x402/core/client';
import type { PaymentPayload, PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import Database from 'better-sqlite3';
import type { LocalAccount } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import { type Plan, flatPlan } from '../../src/pricing/plans.js';
import { useSandbox } from '../helpers/chain.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { encodeHeader } from '../../src/x402/codec.js';
import { postToolCall } from '../helpers/gateway.js';
import { eventually, serveOnSandbox } from '../helpers/served.js';
import { startWebhookReceiver } from '../helpers/webhook-receiver.js';

const chain = useSandbox({ isolate: false });
const ADMIN = 'admin-key-for-the-events-tests-0123456789';
const SECRET_ENV = 'TURNPIKE_TEST_EVENTS_SECRET';
const INSTANCE_SECRET = 'instance-webhook-secret-0123456789';
let served: Awaited<ReturnType<typeof serveOnSandbox>>;
let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;
// Started here, not in a hook: it must live as long as the file's tests.
const receiver = await startWebhookReceiver({ secret: INSTANCE_SECRET });

// 0.01 a call after 5 free calls a month: the 4th call is 80 % of the allowance, the 5th 100 %.
const plan: Plan = { type: 'per_call', ...priceTableSchema.parse({ default: '0.01' }), freeCallsPerMonth: 5 };

const call = async (tool: string, headers: Record<string, string> = {}, slug?: string) => {
  const res = await postToolCall(`${served.url}/mcp${slug ? `/${slug}` : ''}`, tool, headers);
  return (await res.json()) as {
    result?: { isError?: boolean; content?: unknown; structuredContent?: PaymentRequired; _meta?: Record<string, any> };
    error?: unknown;
  };
};
/** A payment of what the challenge asks, signed by `signer` with the official x402 client. */
const paymentBy = async (signer: LocalAccount) => {
  const required = (await call('count')).result!.structuredContent!;
  return new x402Client().register('eip155:8453', new ExactEvmScheme(signer)).createPaymentPayload(required);
};
const paidWith = (payment: PaymentPayload) => call('count', { 'payment-signature': encodeHeader(payment) });
/** A payment signed by someone else (a throwaway key) with `victim` written in as its payer. */
const forgedFor = async (victim: LocalAccount) => {
  const payment = await paymentBy(privateKeyToAccount(generatePrivateKey()));
  const { authorization } = payment.payload as { authorization: Record<string, string> };
  return { ...payment, payload: { ...payment.payload, authorization: { ...authorization, from: victim.address } } };
};
/** A payer's calls counted this month on the gateway's store, read from the database itself. */
const countedFor = (payer: LocalAccount) => {
  const db = new Database(path.join(served.dataDir, 'turnpike.db'), { readonly: true });
  try {
    const row = db.prepare('SELECT SUM(calls) AS calls FROM usage_counts WHERE caller = ?').get(payer.address.toLowerCase());
    return Number((row as { calls: number | null }).calls ?? 0);
  } finally {
    db.close();
  }
};
const ofPayer = (type: string, payer: LocalAccount) => receiver.ofType(type).filter((e) => e.caller?.payer === payer.address.toLowerCase());
const newKey = async (usd: string) => {
  const res = await served.api('POST', '/admin/keys', { key: ADMIN, body: { name: 'agent', usd } });
  assert.equal(res.status, 201, res.text);
  return { id: res.body.id as string, auth: { authorization: `Bearer ${res.body.key as string}` } };
};
// Challenges and refusals of a server sent one by one in each 2 s window (`events.unpaid`).
const UNPAID_PER_WINDOW = 20;
const ofKey = (type: string, keyId: string) => receiver.ofType(type).filter((e) => e.caller?.keyId === keyId);

describe('events out through the gateway', () => {
  before(async () => {
    upstream = await startCounterUpstream();
    process.env[SECRET_ENV] = INSTANCE_SECRET;
    served = await serveOnSandbox(chain, {
      overrides: {
        operators: { allowPrivateUpstreams: true },
        events: {
          endpoints: [{ url: receiver.url, secretFromEnv: SECRET_ENV }],
          retry: { firstDelayMs: 50 },
          unpaid: { perWindow: UNPAID_PER_WINDOW, windowSeconds: 2 },
        },
      },
      secrets: { adminKey: ADMIN, secretsKey: 'ef'.repeat(32) },
      endpoints: [
        {
          slug: 'default',
          path: '/mcp',
          upstream: { url: `${upstream.url}/mcp`, headers: {}, timeoutMs: 10_000 },
          plan,
          payTo: chain.sandbox.accounts.payees[0]!.address,
          challenge: 'tool-result',
        },
        {
          slug: 'tiered',
          path: '/mcp/tiered',
          upstream: { url: `${upstream.url}/mcp`, headers: {}, timeoutMs: 10_000 },
          plan: { type: 'tiered', tiers: [{ upTo: 1, price: 5_000n }, { price: 10_000n }], free: [] },
          payTo: chain.sandbox.accounts.payees[0]!.address,
          challenge: 'tool-result',
        },
        {
          slug: 'unpaid',
          path: '/mcp/unpaid',
          upstream: { url: `${upstream.url}/mcp`, headers: {}, timeoutMs: 10_000 },
          plan: flatPlan(priceTableSchema.parse({ default: '0.01' })),
          payTo: chain.sandbox.accounts.payees[0]!.address,
          challenge: 'tool-result',
        },
      ],
    });
  });
  after(async () => {
    await served?.gateway.close();
    await upstream?.close();
    delete process.env[SECRET_ENV];
  });

  test('every call becomes one signed event: free, paid, challenged, refused and failed, with server, tool, caller and amount', async () => {
    const key = await newKey('1');
    for (let i = 0; i < 5; i++) assert.ok(!(await call('count', key.auth)).result?.isError, `free call ${i + 1}`);
    assert.ok(!(await call('count', key.auth)).result?.isError, 'the 6th call is paid');
    assert.equal((await call('fail', key.auth)).result?.isError, true);
    assert.ok((await call('count')).result?.isError, 'no payment: challenged');
    await served.api('POST', `/admin/keys/${key.id}/revoke`, { key: ADMIN });
    assert.ok((await call('count', key.auth)).error, 'a revoked key is refused');

    // A credential refused names nobody: the event has no caller.
    const refusal = async () => receiver.ofType('call.refused').filter((e) => e.reason === 'key_revoked');
    await eventually(refusal, (r) => r.length === 1, 'the refusal delivered');
    const free = ofKey('call.free', key.id);
    assert.equal(free.length, 5);
    assert.deepEqual(free[0], { ...free[0], server: { id: 'default', slug: 'default' }, tool: 'count', rail: 'free', amount: '0' });
    const [paid] = ofKey('call.paid', key.id);
    assert.deepEqual([paid?.rail, paid?.amount, paid?.tool], ['credits', '10000', 'count']);
    const [failed] = ofKey('call.failed', key.id);
    assert.equal(failed?.tool, 'fail');
    assert.equal(failed?.reason, 'the tool reported isError');
    const challenged = receiver.ofType('call.challenged').find((e) => e.reason === 'payment_missing');
    assert.deepEqual([challenged?.tool, challenged?.amount], ['count', '10000']);
    assert.deepEqual([(await refusal())[0]?.tool, (await refusal())[0]?.caller], ['count', undefined]);
    assert.ok(receiver.received.every((r) => r.signed && r.event.id === r.eventId));
    assert.equal(new Set(receiver.received.map((r) => r.eventId)).size, receiver.received.length, 'no event twice');
    assert.ok(!receiver.received.some((r) => r.body.includes('tp_')), 'no key secret in any event');
  });

  test('80 % and 100 % of the month’s free calls are notified once each, even when a counted call is given back', async () => {
    const key = await newKey('1');
    for (let i = 0; i < 3; i++) await call('count', key.auth);
    await call('fail', key.auth); // the 4th call (80 %) fails: its count is given back, and the next call is the 4th again
    await call('count', key.auth);
    await call('count', key.auth); // the 5th: 100 %
    await call('count', key.auth);
    await eventually(
      async () => ofKey('quota.threshold', key.id).length,
      (n) => n >= 2,
      'both thresholds',
    );
    await new Promise((r) => setTimeout(r, 1_500));
    const notices = ofKey('quota.threshold', key.id).map((e) => [e.data.percent, e.data.calls, e.data.allowance]);
    assert.deepEqual(notices, [
      [80, '4', '5'],
      [100, '5', '5'],
    ]);
  });

  test('a payment signed by someone else in a payer’s name uses none of that payer’s free calls and fires none of their quota events', async () => {
    const victim = chain.sandbox.accounts.payers[0]!;
    for (const n of [1, 2, 3]) {
      const genuine = await paidWith(await paymentBy(victim));
      assert.deepEqual(genuine.result?._meta?.['turnpike/free'], { callsThisMonth: String(n) }, JSON.stringify(genuine));
    }
    const runs = upstream.runs();
    const forged = await paidWith(await forgedFor(victim)); // would be the victim's 4th call: 80 % of their free calls
    assert.equal(forged.result?.isError, true);
    assert.match(forged.result?.structuredContent?.error ?? '', /^invalid_exact_evm_signature: signature is not the payer’s/);
    assert.equal(upstream.runs(), runs, 'the tool did not run');
    assert.equal(countedFor(victim), 3, 'the victim’s count is as their own calls left it');
    await eventually(
      async () => receiver.ofType('call.challenged').filter((e) => e.reason === 'invalid_exact_evm_signature').length,
      (n) => n === 1,
      'the forged call’s challenge',
    );
    await new Promise((r) => setTimeout(r, 1_500));
    assert.deepEqual(ofPayer('quota.threshold', victim), [], 'no quota notice for a call the victim did not make');
    assert.equal(ofPayer('call.challenged', victim).length, 0, 'the challenge names nobody: its payer is unproven');

    await fourthIsFreeAndNotified(victim);
  });

  /** The payer's own 4th call of the month: still free, and the one their 80 % notice is sent for. */
  const fourthIsFreeAndNotified = async (payer: (typeof chain.sandbox.accounts.payers)[number]) => {
    const fourth = await paidWith(await paymentBy(payer));
    assert.deepEqual(fourth.result?._meta?.['turnpike/free'], { callsThisMonth: '4' }, JSON.stringify(fourth));
    const [notice] = await eventually(
      async () => ofPayer('quota.threshold', payer),
      (notices) => notices.length === 1,
      'the 80 % notice, when the payer really reaches it',
    );
    assert.deepEqual([notice!.data.percent, notice!.data.calls], [80, '4']);
  };

  test('forged payments in a payer’s name sent all at once hold none of that payer’s free calls while they are judged', async () => {
    const victim = chain.sandbox.accounts.payers[1]!;
    const forged = await Promise.all(Array.from({ length: 12 }, () => forgedFor(victim)));
    const genuine = await paymentBy(victim);
    const answers = await Promise.all([...forged.map(paidWith), paidWith(genuine)]);
    const mine = answers.at(-1)!;
    assert.deepEqual(mine.result?._meta?.['turnpike/free'], { callsThisMonth: '1' }, JSON.stringify(mine));
    assert.ok(answers.slice(0, -1).every((a) => a.result?.isError === true));
    assert.equal(countedFor(victim), 1);
  });

  test('a payer’s payment settled on another server of the same payee, replayed by someone else, fires none of the payer’s quota events', async () => {
    const victim = chain.sandbox.accounts.payers[2]!;
    for (const n of [1, 2, 3]) {
      const genuine = await paidWith(await paymentBy(victim));
      assert.deepEqual(genuine.result?._meta?.['turnpike/free'], { callsThisMonth: String(n) }, JSON.stringify(genuine));
    }
    // The payer pays for a call on the other server: once settled, its authorization and signature are on chain for anyone.
    const settled = await paymentBy(victim); // the same terms there (its challenges are another test's count)
    const paid = await call('count', { 'payment-signature': encodeHeader(settled) }, 'unpaid');
    assert.ok(!paid.result?.isError, JSON.stringify(paid));

    const replayed = await paidWith(settled); // on the first server it would be the payer's 4th call: 80 % of their free calls
    assert.equal(replayed.result?.isError, true, JSON.stringify(replayed));
    assert.equal(countedFor(victim), 3, 'the payer’s count is as their own calls left it');
    await new Promise((r) => setTimeout(r, 1_500));
    assert.deepEqual(ofPayer('quota.threshold', victim), [], 'no quota notice for a call the payer did not make');

    await fourthIsFreeAndNotified(victim);
  });

  // A settled payment is public (on chain, in the mempool while deferred): anyone can send it again while it is
  // valid. `authenticate` finds it in the journal before anything is counted in its payer's name.
  test('a payer’s settled payment replayed all at once by someone else holds none of that payer’s free calls while it is judged', async () => {
    const victim = chain.sandbox.accounts.payers[3]!;
    const settled = await paymentBy(victim);
    assert.ok(!(await call('count', { 'payment-signature': encodeHeader(settled) }, 'unpaid')).result?.isError, 'paid on the other server');
    const genuine = await paymentBy(victim);
    const answers = await Promise.all([...Array.from({ length: 12 }, () => paidWith(settled)), paidWith(genuine)]);
    const mine = answers.at(-1)!;
    assert.deepEqual(mine.result?._meta?.['turnpike/free'], { callsThisMonth: '1' }, JSON.stringify(mine));
    assert.ok(answers.slice(0, -1).every((a) => a.result?.isError === true));
    assert.equal(countedFor(victim), 1);
  });

  test('a payer past their first tier whose paid answer was lost gets it back for the same payment, counted once, though it is signed above the list price', async () => {
    const payer = chain.sandbox.accounts.payers[4]!;
    const sign = (required: PaymentRequired) =>
      new x402Client().register('eip155:8453', new ExactEvmScheme(payer)).createPaymentPayload(required);
    const tiered = async (payment: PaymentPayload) => call('count', { 'payment-signature': encodeHeader(payment) }, 'tiered');
    const listed = (await call('count', {}, 'tiered')).result!.structuredContent!;
    assert.equal(listed.accepts[0]!.amount, '5000', 'the list price is the first tier’s');
    assert.ok(!(await tiered(await sign(listed))).result?.isError, 'the first call, at the list price');
    const asked = (await tiered(await sign(listed))).result!;
    assert.equal(asked.isError, true, 'the second call costs more than the list price');
    assert.equal(asked.structuredContent!.accepts[0]!.amount, '10000');
    const payment = await sign(asked.structuredContent!);
    const runs = upstream.runs();
    const paid = await tiered(payment);
    assert.ok(!paid.result?.isError, JSON.stringify(paid));
    const again = await tiered(payment); // its answer lost: the same call with the same payment
    assert.ok(!again.result?.isError, JSON.stringify(again));
    assert.deepEqual(again.result?.content, paid.result?.content, 'the kept result');
    assert.equal(again.result?._meta?.['x402/payment-response']?.transaction, paid.result?._meta?.['x402/payment-response']?.transaction);
    assert.equal(upstream.runs(), runs + 1, 'the tool ran once');
    assert.equal(countedFor(payer), 2, 'counted once');
  });

  test('a balance below the threshold its holder set is notified once, by the debit that crossed it', async () => {
    const key = await newKey('0.08');
    for (let i = 0; i < 5; i++) await call('count', key.auth); // the free calls
    const bad = await served.api('POST', '/credits/alerts', { headers: key.auth, body: { lowBalanceUsd: '-1' } });
    assert.equal(bad.status, 400);
    const set = await served.api('POST', '/credits/alerts', { headers: key.auth, body: { lowBalanceUsd: '0.055' } });
    assert.equal(set.status, 200, set.text);
    assert.equal(set.body.lowBalanceAlert, '55000');
    for (let i = 0; i < 4; i++) await call('count', key.auth); // 0.07, 0.06, 0.05 (crosses), 0.04
    await eventually(
      async () => ofKey('balance.low', key.id).length,
      (n) => n === 1,
      'the alert',
    );
    await new Promise((r) => setTimeout(r, 1_500));
    assert.deepEqual(
      ofKey('balance.low', key.id).map((e) => e.data),
      [{ balance: '50000', threshold: '55000' }],
    );
  });

  test('an operator manages webhook endpoints and reads their delivery log; they get their own servers’ events only', async () => {
    const op = await served.api('POST', '/admin/operators', { key: ADMIN, body: { email: 'ops@example.com', name: 'ops' } });
    assert.equal(op.status, 201, op.text);
    const opKey = op.body.key as string;
    const theirs = await startWebhookReceiver();
    assert.equal((await served.api('POST', '/operator/webhooks', { key: opKey, body: { url: 'ftp://example.com/x' } })).status, 400);
    const created = await served.api('POST', '/operator/webhooks', { key: opKey, body: { url: theirs.url } });
    assert.equal(created.status, 201, created.text);
    assert.match(created.body.secret, /^tpwh_/);
    theirs.state.secret = created.body.secret;
    const listed = await served.api('GET', '/operator/webhooks', { key: opKey });
    assert.deepEqual(listed.body.endpoints, [{ id: created.body.id, url: theirs.url, createdAt: created.body.createdAt }]);
    assert.ok(!listed.text.includes(created.body.secret), 'the secret is shown once');

    const registered = await served.api('POST', '/operator/servers', {
      key: opKey,
      body: {
        slug: 'theirs',
        name: 'theirs',
        upstream: `${upstream.url}/mcp`,
        custody: 'direct',
        payTo: chain.sandbox.accounts.payees[1]!.address,
        plan: { type: 'per_call', default: '0.02' },
      },
    });
    assert.equal(registered.status, 201, registered.text);
    await call('count', {}, 'theirs');
    await call('count'); // the instance's own server: not this operator's business
    await eventually(
      async () => theirs.received.length,
      (n) => n >= 1,
      'their event',
    );
    await new Promise((r) => setTimeout(r, 1_500));
    assert.deepEqual(
      theirs.received.map((r) => [r.event.type, r.event.server.slug, r.signed]),
      [['call.challenged', 'theirs', true]],
    );
    assert.ok(
      receiver.received.some((r) => r.eventId === theirs.received[0]!.eventId),
      'the instance’s own endpoint gets every event',
    );

    const log = await served.api('GET', `/operator/webhooks/${created.body.id}/deliveries`, { key: opKey });
    assert.equal(log.status, 200, log.text);
    assert.deepEqual(
      log.body.deliveries.map((d: Record<string, unknown>) => [d.eventId, d.state, d.attempts, d.lastStatus]),
      [[theirs.received[0]!.eventId, 'delivered', 1, 204]],
    );
    const other = await served.api('POST', '/admin/operators', { key: ADMIN, body: { email: 'eve@example.com', name: 'eve' } });
    assert.equal((await served.api('GET', `/operator/webhooks/${created.body.id}/deliveries`, { key: other.body.key })).status, 404);
    assert.equal((await served.api('DELETE', `/operator/webhooks/${created.body.id}`, { key: other.body.key })).status, 404);
    assert.equal((await served.api('DELETE', `/operator/webhooks/${created.body.id}`, { key: opKey })).status, 200);
    assert.deepEqual((await served.api('GET', '/operator/webhooks', { key: opKey })).body.endpoints, []);
  });

  test('/health reports the events outbox: nothing waiting once delivered', async () => {
    await eventually(
      async () => (await served.api('GET', '/health')).body.events?.undelivered,
      (n) => n === 0,
      'outbox drained',
    );
    const health = await served.api('GET', '/health');
    assert.deepEqual(health.body.events, { undelivered: 0, oldestAgeSeconds: null, givenUp: 0, degraded: false });
    assert.equal(health.body.status, 'ok');
  });

  test('500 unpaid calls raise at most the bound of call.challenged events and a summary counting the rest; paid calls in between all raise call.paid', async () => {
    const key = await newKey('1');
    const ofServer = (type: string) => receiver.ofType(type).filter((e) => e.server?.slug === 'unpaid');
    const started = Date.now();
    for (let batch = 0; batch < 20; batch++) {
      const unpaid = Array.from({ length: 25 }, () => call('count', {}, 'unpaid'));
      const paid = call('count', key.auth, 'unpaid');
      for (const answer of await Promise.all(unpaid)) assert.ok(answer.result?.isError, 'no payment: challenged');
      assert.ok(!(await paid).result?.isError, `paid call ${batch + 1}`);
    }
    const windows = Math.floor(Date.now() / 2_000) - Math.floor(started / 2_000) + 1;

    const suppressed = (summaries: Record<string, any>[]) => summaries.reduce((n, s) => n + s.data.suppressed, 0);
    // The last window's summary is raised when it ends.
    await eventually(
      async () => ofServer('call.challenged').length + suppressed(ofServer('calls.suppressed')),
      (n) => n === 500,
      'every unpaid call is an event or counted in a summary',
    );
    const challenged = ofServer('call.challenged').length;
    assert.ok(challenged <= UNPAID_PER_WINDOW * windows, `${challenged} challenges sent in ${windows} windows`);
    for (const summary of ofServer('calls.suppressed')) {
      assert.deepEqual(Object.keys(summary.data.counts), ['call.challenged']);
      assert.equal(summary.data.counts['call.challenged'].payment_missing, summary.data.suppressed);
      assert.equal(summary.data.limit, UNPAID_PER_WINDOW);
      assert.equal(Date.parse(summary.data.until) - Date.parse(summary.data.from), 2_000);
    }
    const paid = await eventually(
      async () => ofKey('call.paid', key.id),
      (p) => p.length === 20,
      'every paid call has its event',
    );
    assert.ok(paid.every((e) => e.amount === '10000' && e.server.slug === 'unpaid'));
  });
});
