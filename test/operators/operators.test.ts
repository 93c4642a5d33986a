import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { x402Client } from '@x402/core/client';
import type { PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import type { Address } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { Agent, type Dispatcher, fetch } from 'undici';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { useSandbox } from '../helpers/chain.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { eventually, serveOnSandbox } from '../helpers/served.js';

const chain = useSandbox({ isolate: false });
const ADMIN = 'admin-key-for-the-operator-tests-0123456789';
const SECRET = 'upstream-secret-that-must-never-leak-42';
let served: Awaited<ReturnType<typeof serveOnSandbox>>;
let api: typeof served.api;
let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;
let alice: { id: string; key: string };
let bob: { id: string; key: string };

type RpcAnswer = {
  result?: { isError?: boolean; structuredContent?: PaymentRequired; content?: { text: string }[]; _meta?: Record<string, any> };
  error?: { code: number };
};

async function call(slug: string, tool: string, options: { payment?: unknown; apiKey?: string; from?: Dispatcher } = {}) {
  const params = { name: tool, arguments: {}, ...(options.payment ? { _meta: { 'x402/payment': options.payment } } : {}) };
  const res = await fetch(`${served.url}/mcp/${slug}`, {
    ...(options.from ? { dispatcher: options.from } : {}),
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
      ...(options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {}),
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params }),
  });
  return { status: res.status, body: (await res.json()) as RpcAnswer };
}

/** Asks for the challenge, then pays exactly what it asks with the official x402 client. */
async function pay(slug: string, tool: string, payer = chain.sandbox.accounts.payers[3]!) {
  const challenge = await call(slug, tool);
  const required = challenge.body.result!.structuredContent!;
  const payment = await new x402Client().register('eip155:8453', new ExactEvmScheme(payer)).createPaymentPayload(required);
  return { required, payment, answer: await call(slug, tool, { payment }) };
}

/** Connections from another machine's address than the payer's (127.0.0.2: Linux answers all of 127/8 on loopback). */
const elsewhere = new Agent({ localAddress: '127.0.0.2' });

const serverBody = (slug: string, extra: Record<string, unknown> = {}) => ({
  slug,
  name: `server ${slug}`,
  upstream: `${upstream.url}/mcp`,
  custody: 'platform',
  plan: { type: 'per_call', default: '0.01' },
  ...extra,
});

describe('operators: servers, plans, revenue, withdrawals, analytics', () => {
  before(async () => {
    upstream = await startCounterUpstream();
    served = await serveOnSandbox(chain, {
      overrides: { operators: { allowPrivateUpstreams: true, takeRateBps: 250, minWithdrawalUsd: '0.001' } },
      secrets: { adminKey: ADMIN, secretsKey: 'ab'.repeat(32) },
    });
    api = served.api;
    const created = async (email: string, payoutAddress: Address) => {
      const res = await api('POST', '/admin/operators', { key: ADMIN, body: { email, name: email.split('@')[0], payoutAddress } });
      assert.equal(res.status, 201, res.text);
      return { id: res.body.id as string, key: res.body.key as string };
    };
    alice = await created('alice@example.com', chain.sandbox.accounts.payees[0]!.address);
    bob = await created('bob@example.com', chain.sandbox.accounts.payees[1]!.address);
  });
  after(async () => {
    await served?.gateway.close();
    await upstream?.close();
  });

  test('operators are made by the admin (registration is closed by default); keys are op_…, shown once, checked', async () => {
    assert.match(alice.key, /^op_[\w-]{43}$/);
    assert.equal((await api('POST', '/operators', { body: { email: 'eve@example.com', name: 'eve' } })).body.error, 'registration_closed');
    assert.equal((await api('POST', '/admin/operators', { key: ADMIN, body: { email: 'ALICE@example.com', name: 'again' } })).status, 409);
    assert.equal((await api('POST', '/admin/operators', { body: { email: 'x@example.com', name: 'x' } })).status, 401);
    const me = await api('GET', '/operator', { key: alice.key });
    assert.equal(me.status, 200);
    assert.equal(me.body.email, 'alice@example.com');
    assert.equal(me.body.key, undefined);
    assert.equal((await api('GET', '/operator', { key: `${alice.key.slice(0, -2)}xx` })).status, 401);
    assert.equal((await api('GET', '/operator', { key: ADMIN })).status, 401);
  });

  test('server registration checks every field and keeps the upstream secret sealed', async () => {
    const bad = async (body: Record<string, unknown>, field: RegExp) => {
      const res = await api('POST', '/operator/servers', { key: alice.key, body });
      assert.equal(res.status, 400, `${JSON.stringify(body)} → ${res.text}`);
      assert.match(res.body.message, field);
    };
    await bad(serverBody('Bad_Slug'), /^slug/);
    await bad(serverBody('ok', { upstream: 'ftp://example.com/mcp' }), /^upstream/);
    await bad(serverBody('ok', { custody: 'direct' }), /^payTo/);
    await bad(serverBody('ok', { plan: { type: 'per_call', default: '0.0000001' } }), /^plan\.default: .*more than 6 decimals/);
    await bad(
      serverBody('ok', { plan: { type: 'tiered', tiers: [{ upTo: 10, price: '0' }, { upTo: 5, price: '0.01' }, { price: '0.02' }] } }),
      /^plan\.tiers\.1\.upTo/,
    );
    await bad(serverBody('ok', { plan: { type: 'tiered', tiers: [{ upTo: 10, price: '0' }] } }), /^plan\.tiers\.0\.upTo: the last tier/);
    await bad(serverBody('ok', { payTo: '0x1234' }), /^payTo/);
    await bad(serverBody('ok', { auth: { mode: 'query', secret: 'x' } }), /^auth\.name/);

    const created = await api('POST', '/operator/servers', {
      key: alice.key,
      body: serverBody('alpha', {
        auth: { mode: 'header', secret: SECRET },
        plan: { type: 'per_call', default: '0.01', freeCallsPerMonth: 2 },
      }),
    });
    assert.equal(created.status, 201, created.text);
    assert.deepEqual(created.body.auth, { mode: 'header', secret: '(set)' });
    assert.equal(created.body.path, '/mcp/alpha');
    const taken = await api('POST', '/operator/servers', { key: bob.key, body: serverBody('alpha') });
    assert.equal(taken.status, 409);
    assert.equal(taken.body.error, 'slug_taken');
    assert.ok(!readFileSync(path.join(served.dataDir, 'turnpike.db')).includes(SECRET), 'the secret is not in the database in clear');
    assert.ok(!(await api('GET', '/operator/servers/alpha', { key: alice.key })).text.includes(SECRET));
  });

  test('an operator sees and changes only their own servers, withdrawals and analytics', async () => {
    for (const [method, route, body] of [
      ['GET', '/operator/servers/alpha', undefined],
      ['PATCH', '/operator/servers/alpha', { name: 'mine now' }],
      ['DELETE', '/operator/servers/alpha', undefined],
      ['GET', '/operator/analytics?server=alpha', undefined],
    ] as const) {
      const res = await api(method, route, { key: bob.key, ...(body ? { body } : {}) });
      assert.equal(res.status, 404, `${method} ${route}`);
    }
    assert.deepEqual((await api('GET', '/operator/servers', { key: bob.key })).body.servers, []);
    assert.equal((await api('GET', '/operator/servers/alpha', { key: alice.key })).body.name, 'server alpha');
  });

  test('free calls per month: a payer’s first two calls are free (the payment only proves who pays), the third is settled', async () => {
    const payer = chain.sandbox.accounts.payers[3]!;
    const treasury = chain.sandbox.accounts.treasury.address;
    const before = { payer: await chain.balanceOf(payer.address), treasury: await chain.balanceOf(treasury) };
    const failed = await pay('alpha', 'fail', payer);
    assert.equal(failed.answer.body.result?.isError, true, 'a failed call');
    for (const n of [1, 2]) {
      const { required, answer } = await pay('alpha', 'count', payer);
      assert.equal(required.accepts[0]!.amount, '10000');
      assert.equal(required.accepts[0]!.payTo.toLowerCase(), treasury.toLowerCase(), 'platform custody: the treasury is paid');
      assert.equal(answer.body.result?.isError, undefined, JSON.stringify(answer.body));
      assert.deepEqual(
        answer.body.result?._meta?.['turnpike/free'],
        { callsThisMonth: String(n) },
        'the failed call did not use a free call',
      );
      assert.equal(answer.body.result?._meta?.['x402/payment-response'], undefined);
    }
    assert.equal(await chain.balanceOf(payer.address), before.payer, 'nothing moved for free calls');
    const third = await pay('alpha', 'count', payer);
    assert.equal(third.answer.body.result?._meta?.['x402/payment-response']?.success, true);
    assert.equal(await chain.balanceOf(payer.address), before.payer - 10_000n);
    assert.equal(await chain.balanceOf(treasury), before.treasury + 10_000n);
    const other = await pay('alpha', 'count', chain.sandbox.accounts.payers[4]!);
    assert.deepEqual(other.answer.body.result?._meta?.['turnpike/free'], { callsThisMonth: '1' }, 'free calls are counted per payer');
  });

  test('free calls are not for throwaway keys: a zero-value payment, or one its signer cannot cover, is refused and uses no free call', async () => {
    const throwaway = privateKeyToAccount(generatePrivateKey());
    const runs = upstream.runs();
    const challenge = (await call('alpha', 'count')).body.result!.structuredContent!;
    const client = new x402Client().register('eip155:8453', new ExactEvmScheme(throwaway));
    const zero = await client.createPaymentPayload({ ...challenge, accepts: [{ ...challenge.accepts[0]!, amount: '0' }] });
    const refusedZero = await call('alpha', 'count', { payment: zero });
    assert.equal(refusedZero.body.result?.isError, true);
    assert.equal(refusedZero.body.result?._meta?.['turnpike/free'], undefined);
    const unfunded = await call('alpha', 'count', { payment: await client.createPaymentPayload(challenge) });
    assert.equal(unfunded.body.result?.isError, true);
    assert.match(JSON.stringify(unfunded.body.result), /insufficient_balance/);
    assert.equal(upstream.runs(), runs, 'the tool never ran for them');
    const funded = await pay('alpha', 'count', chain.sandbox.accounts.payers[5]!);
    assert.deepEqual(
      funded.answer.body.result?._meta?.['turnpike/free'],
      { callsThisMonth: '1' },
      'a payer who could pay gets the free call',
    );
  });

  test('revenue is split at the take rate exactly, and the USDC share is withdrawn on chain once', async () => {
    const balance = await eventually(
      async () => (await api('GET', '/operator/balance', { key: alice.key })).body,
      (b) => b.usdcEarned === '9750',
      'alice’s earned USDC (10000 at 250 bps)',
    );
    assert.equal(balance.usdcAvailable, '9750');
    const payout = chain.sandbox.accounts.payees[0]!.address;
    const before = await chain.balanceOf(payout);
    const over = await api('POST', '/operator/withdrawals', { key: alice.key, body: { usd: '0.01', idempotencyKey: 'too-much' } });
    assert.equal(over.status, 409);
    assert.equal(over.body.error, 'insufficient_balance');
    assert.equal(over.body.available, '9750');
    const attempts = await Promise.all(
      ['w1', 'w2', 'w3'].map((k) => api('POST', '/operator/withdrawals', { key: alice.key, body: { usd: '0.008', idempotencyKey: k } })),
    );
    const ok = attempts.filter((a) => a.status === 201);
    assert.equal(ok.length, 1, attempts.map((a) => a.text).join('\n'));
    assert.equal(ok[0]!.body.state, 'confirmed', ok[0]!.text);
    assert.match(ok[0]!.body.txHash, /^0x[0-9a-f]{64}$/);
    assert.equal(attempts.filter((a) => a.body.error === 'insufficient_balance').length, 2);
    assert.equal(await chain.balanceOf(payout), before + 8_000n);
    const repeat = await api('POST', '/operator/withdrawals', {
      key: alice.key,
      body: { usd: '0.008', idempotencyKey: ok[0]!.body.idempotencyKey },
    });
    assert.equal(repeat.status, 200);
    assert.equal(repeat.body.id, ok[0]!.body.id);
    assert.equal(await chain.balanceOf(payout), before + 8_000n, 'a repeated request moves nothing');
    const after = (await api('GET', '/operator/balance', { key: alice.key })).body;
    assert.equal(after.usdcWithdrawn, '8000');
    assert.equal(after.usdcAvailable, '1750');
    assert.equal((await api('GET', `/operator/withdrawals/${ok[0]!.body.id}`, { key: bob.key })).status, 404);
    const below = await api('POST', '/operator/withdrawals', { key: bob.key, body: { idempotencyKey: 'nothing' } });
    assert.equal(below.body.error, 'below_minimum');
    const invalid = await api('PATCH', '/operator', { key: alice.key, body: { payoutAddress: '0x12345' } });
    assert.equal(invalid.status, 400);
    assert.match(invalid.body.message, /^payoutAddress/);
    await api('PATCH', '/operator', { key: alice.key, body: { payoutAddress: null } });
    const nowhere = await api('POST', '/operator/withdrawals', { key: alice.key, body: { usd: '0.001', idempotencyKey: 'nowhere' } });
    assert.equal(nowhere.body.error, 'payout_address_missing');
    await api('PATCH', '/operator', { key: alice.key, body: { payoutAddress: payout } });
    assert.equal(await chain.balanceOf(payout), before + 8_000n, 'nothing moved');
  });

  test('tiered plan on the credits rail: priced by the caller’s count this month, exactly', async () => {
    const created = await api('POST', '/operator/servers', {
      key: bob.key,
      body: serverBody('beta', {
        custody: 'direct',
        payTo: chain.sandbox.accounts.payees[1]!.address,
        plan: { type: 'tiered', tiers: [{ upTo: 1, price: '0' }, { upTo: 3, price: '0.005' }, { price: '0.01' }] },
      }),
    });
    assert.equal(created.status, 201, created.text);
    const key = await api('POST', '/admin/keys', { key: ADMIN, body: { name: 'tier tester', usd: '1' } });
    const charged: string[] = [];
    for (let i = 0; i < 5; i++) {
      const answer = await call('beta', 'count', { apiKey: key.body.key });
      assert.equal(answer.body.result?.isError, undefined, JSON.stringify(answer.body));
      charged.push(answer.body.result?._meta?.['turnpike/credits']?.charged ?? 'free');
    }
    assert.deepEqual(charged, ['free', '5000', '5000', '10000', '10000']);
    const balance = (await api('GET', `/admin/keys/${key.body.id}`, { key: ADMIN })).body.balance;
    assert.equal(balance, String(1_000_000 - 30_000));
  });

  test('keys an operator makes: for their customers, on their servers only, invisible to other operators', async () => {
    const made = await api('POST', '/operator/keys', { key: alice.key, body: { name: 'customer of alice' } });
    assert.equal(made.status, 201, made.text);
    assert.match(made.body.key, /^tp_/);
    const alpha = (await api('GET', '/operator/servers/alpha', { key: alice.key })).body;
    assert.deepEqual(made.body.scope, { servers: ['alpha'], serverIds: [alpha.id] }, 'bound to the server, not its slug');
    assert.equal(made.body.balance, '0', 'funded only by the customer’s own top-ups');
    assert.equal((await api('POST', '/operator/keys', { key: alice.key, body: { name: 'x', usd: '5' } })).status, 400);
    const foreign = await api('POST', '/operator/keys', { key: alice.key, body: { name: 'x', scope: { servers: ['alpha', 'beta'] } } });
    assert.equal(foreign.status, 400);
    assert.match(foreign.body.message, /not your servers: beta/);
    for (const [method, route] of [
      ['GET', `/operator/keys/${made.body.id}`],
      ['GET', `/operator/keys/${made.body.id}/ledger`],
      ['POST', `/operator/keys/${made.body.id}/suspend`],
      ['POST', `/operator/keys/${made.body.id}/revoke`],
    ] as const) {
      assert.equal((await api(method, route, { key: bob.key })).status, 404, `${method} ${route}`);
    }
    assert.deepEqual((await api('GET', '/operator/keys', { key: bob.key })).body.keys, []);
    assert.equal((await api('GET', '/operator/keys', { key: alice.key })).body.keys.length, 1);
    await api('POST', `/admin/keys/${made.body.id}/topup`, { key: ADMIN, body: { usd: '1', idempotencyKey: 'fund-alice-customer' } });
    const elsewhere = await call('beta', 'count', { apiKey: made.body.key });
    assert.equal(elsewhere.status, 403, 'it cannot pay on another operator’s server');
    assert.equal((await api('POST', `/operator/keys/${made.body.id}/suspend`, { key: alice.key })).body.status, 'suspended');
  });

  test('a price change applies to the next call', async () => {
    const changed = await api('PATCH', '/operator/servers/beta', { key: bob.key, body: { plan: { type: 'per_call', default: '0.002' } } });
    assert.equal(changed.status, 200, changed.text);
    const key = await api('POST', '/admin/keys', { key: ADMIN, body: { name: 'after the change', usd: '1' } });
    const answer = await call('beta', 'count', { apiKey: key.body.key });
    assert.equal(answer.body.result?._meta?.['turnpike/credits']?.charged, '2000');
  });

  test('analytics: by day, tool, rail and caller, JSON and CSV, scoped and validated; denials counted', async () => {
    await eventually(
      async () => (await api('GET', '/operator/analytics', { key: bob.key })).body,
      (a) => a.byRail?.some((r: { key: string; revenue: string }) => r.key === 'credits' && r.revenue === '32000'),
      'bob’s credits revenue',
    );
    const bobs = (await api('GET', '/operator/analytics', { key: bob.key })).body;
    assert.deepEqual(
      bobs.byTool.map((r: { key: string }) => r.key),
      ['count'],
    );
    assert.equal(bobs.byRail.find((r: { key: string }) => r.key === 'free').calls, 1);
    assert.equal(bobs.byDay.length, 1);
    assert.equal(bobs.byDay[0].key, new Date().toISOString().slice(0, 10));
    const alices = (await api('GET', '/operator/analytics?server=alpha', { key: alice.key })).body;
    assert.equal(alices.byRail.find((r: { key: string }) => r.key === 'x402').revenue, '10000');
    assert.equal(alices.byRail.find((r: { key: string }) => r.key === 'x402').operatorShare, '9750');
    assert.ok(
      alices.denials.some((d: { reason: string }) => d.reason === 'payment_missing'),
      JSON.stringify(alices.denials),
    );
    assert.equal(alices.settlement.count, 1);
    const csv = await api('GET', '/operator/analytics?format=csv', { key: alice.key });
    assert.match(csv.headers.get('content-type') ?? '', /^text\/csv/);
    assert.match(csv.text, /^section,key,calls,paid_calls,revenue,operator_share,count\r\n/);
    assert.match(csv.text, /\r\nrail,x402,1,1,10000,9750,\r\n/);
    for (const [query, field] of [
      ['from=2026-13-01', /^from/],
      ['from=2026-02-30', /^from: 2026-02-30 is not a calendar date/],
      ['from=2026-03-01&to=2026-02-01', /^from: from must not be after to/],
      ['from=2020-01-01&to=2026-01-01', /^to: at most 366 days/],
      ['format=xml', /^format/],
    ] as const) {
      const res = await api('GET', `/operator/analytics?${query}`, { key: alice.key });
      assert.equal(res.status, 400, query);
      assert.match(res.body.message, field);
    }
    const all = (await api('GET', '/admin/analytics', { key: ADMIN })).body;
    assert.deepEqual(all.byRail.map((r: { key: string }) => r.key).sort(), ['credits', 'free', 'x402']);
  });

  test('the audit log says who did what, from where; an operator sees only their own', async () => {
    const mine = (await api('GET', '/operator/audit', { key: alice.key })).body.entries as {
      actor: string;
      action: string;
      ip?: string;
      operatorId: string;
    }[];
    assert.ok(mine.length > 0);
    assert.ok(mine.every((e) => e.operatorId === alice.id));
    assert.ok(mine.some((e) => e.action === 'server.create' && e.actor === `operator:${alice.id}` && e.ip === '127.0.0.1'));
    assert.ok(mine.some((e) => e.action === 'withdrawal.request'));
    assert.ok(mine.some((e) => e.action === 'operator.create' && e.actor === 'admin'));
    assert.ok(
      mine.filter((e) => e.actor !== `operator:${alice.id}`).every((e) => e.ip === undefined),
      'the admin’s address is not the operator’s to see',
    );
    const all = (await api('GET', '/admin/audit', { key: ADMIN })).body.entries as { operatorId: string; actor: string; ip?: string }[];
    assert.ok(all.some((e) => e.operatorId === bob.id));
    assert.ok(
      all.some((e) => e.actor === 'admin' && e.ip === '127.0.0.1'),
      'the admin sees every address',
    );
    assert.equal((await api('GET', '/admin/audit?limit=0', { key: ADMIN })).status, 400);
  });

  test('every change the admin makes to keys and credit is in the audit log, with what moved; a change that did nothing is not', async () => {
    const made = await api('POST', '/admin/keys', { key: ADMIN, body: { name: 'audited', usd: '5' } });
    assert.equal(made.status, 201, made.text);
    const other = await api('POST', '/admin/keys', { key: ADMIN, body: { name: 'audited too' } });
    const id = made.body.id as string;
    const topup = { usd: '2', reason: 'goodwill', idempotencyKey: `audit-${id}` };
    assert.equal((await api('POST', `/admin/keys/${id}/topup`, { key: ADMIN, body: topup })).status, 201);
    assert.equal(
      (await api('POST', `/admin/keys/${id}/topup`, { key: ADMIN, body: topup })).status,
      200,
      'the same top-up again: nothing applied',
    );
    assert.equal(
      (
        await api('POST', `/admin/keys/${id}/adjust`, {
          key: ADMIN,
          body: { usd: '-1.5', reason: 'correction', idempotencyKey: `adj-${id}` },
        })
      ).status,
      201,
    );
    const transfer = { from: id, to: other.body.id, usd: '1', reason: 'move', idempotencyKey: `tr-${id}` };
    assert.equal((await api('POST', '/admin/transfers', { key: ADMIN, body: transfer })).status, 201);
    assert.equal((await api('POST', `/admin/keys/${id}/suspend`, { key: ADMIN })).status, 200);

    type Entry = { actor: string; action: string; target?: string; ip?: string; detail?: Record<string, unknown> };
    const entries = ((await api('GET', '/admin/audit?limit=100', { key: ADMIN })).body.entries as Entry[]).filter(
      (e) => e.target === id || e.target === `${id}→${other.body.id}`,
    );
    const seen = entries.map((e) => [e.action, e.detail?.amount ?? null]).reverse();
    assert.deepEqual(seen, [
      ['key.create', '5000000'],
      ['credits.topup', '2000000'],
      ['credits.adjust', '-1500000'],
      ['credits.transfer', '1000000'],
      ['key.suspend', null],
    ]);
    assert.ok(entries.every((e) => e.actor === 'admin' && e.ip === '127.0.0.1'));
  });

  test('a deleted server’s slug goes to a new server with nothing of the old one: not its call counts, history, denials or keys', async () => {
    const plan = { type: 'per_call', default: '0.01', freeCallsPerMonth: 1 };
    assert.equal((await api('POST', '/operator/servers', { key: alice.key, body: serverBody('gamma', { plan }) })).status, 201);
    const scoped = (
      await api('POST', '/operator/keys', { key: alice.key, body: { name: 'gamma customer', scope: { servers: ['gamma'] } } })
    ).body;
    await api('POST', `/admin/keys/${scoped.id}/topup`, { key: ADMIN, body: { usd: '1', idempotencyKey: 'fund-gamma-customer' } });
    const anyServer = (await api('POST', '/admin/keys', { key: ADMIN, body: { name: 'pays anywhere', usd: '1' } })).body;
    const charged = async (apiKey: string) => {
      const answer = await call('gamma', 'count', { apiKey });
      assert.equal(answer.body.result?.isError, undefined, JSON.stringify(answer.body));
      return answer.body.result?._meta?.['turnpike/credits']?.charged ?? 'free';
    };
    assert.deepEqual([await charged(scoped.key), await charged(scoped.key), await charged(anyServer.key)], ['free', '10000', 'free']);
    assert.equal((await call('gamma', 'count')).body.result?.isError, true, 'a call without payment: a denial');
    await eventually(
      async () => (await api('GET', '/operator/analytics?server=gamma', { key: alice.key })).body,
      (a) => a.byRail.some((r: { key: string; revenue: string }) => r.key === 'credits' && r.revenue === '10000') && a.denials.length === 1,
      'alice’s revenue and denial on gamma, settled',
    );
    const deleted = await api('DELETE', '/operator/servers/gamma', { key: alice.key });
    assert.equal(deleted.status, 200, deleted.text);
    assert.equal((await call('gamma', 'count')).status, 404);

    const again = await api('POST', '/operator/servers', { key: bob.key, body: serverBody('gamma', { plan }) });
    assert.equal(again.status, 201, again.text);
    const refused = await call('gamma', 'count', { apiKey: scoped.key });
    assert.equal(refused.status, 403, 'a key alice made for her gamma does not pay bob’s');
    assert.equal(await charged(anyServer.key), 'free', 'the month’s count starts again on the new server');
    await eventually(
      async () => (await api('GET', '/admin/analytics?server=gamma', { key: ADMIN })).body,
      (a) => a.byRail.length > 0,
      'bob’s first call',
    );
    const bobs = (await api('GET', '/operator/analytics?server=gamma', { key: bob.key })).body;
    assert.deepEqual(
      bobs.denials.map((d: { reason: string }) => d.reason),
      ['out_of_scope'],
      'alice’s denial is not bob’s',
    );
    const instance = (await api('GET', '/admin/analytics?server=gamma', { key: ADMIN })).body;
    assert.deepEqual(
      instance.byRail.map((r: { key: string; calls: number }) => [r.key, r.calls]),
      [['free', 1]],
      'the slug’s analytics are of the server at it now',
    );
  });

  test('a deleted server’s slug is refused (409 slug_retired) while a key scoped to it by slug alone, made before scopes named ids, could pay whoever holds it', async () => {
    assert.equal((await api('POST', '/operator/servers', { key: alice.key, body: serverBody('delta') })).status, 201);
    const store = await openSqliteStore({ path: path.join(served.dataDir, 'turnpike.db') });
    try {
      await store.credits.createKey({ id: 'key_legacy_delta', hash: 'legacy-delta', name: 'old', scope: { servers: ['delta'] } });
    } finally {
      await store.close();
    }
    assert.equal((await api('DELETE', '/operator/servers/delta', { key: alice.key })).status, 200);
    const refused = await api('POST', '/operator/servers', { key: bob.key, body: serverBody('delta') });
    assert.equal(refused.status, 409, refused.text);
    assert.equal(refused.body.error, 'slug_retired');
    assert.match(refused.body.message, /choose another slug/);
    assert.equal((await api('POST', '/admin/keys/key_legacy_delta/revoke', { key: ADMIN })).status, 200);
    assert.equal(
      (await api('POST', '/operator/servers', { key: bob.key, body: serverBody('delta') })).status,
      201,
      'free once nothing live names it',
    );
  });

  test('discovery lists public servers; a private one is served but not listed; a suspended operator’s servers stop', async () => {
    const hidden = await api('POST', '/operator/servers', { key: bob.key, body: serverBody('hidden', { public: false }) });
    assert.equal(hidden.status, 201, hidden.text);
    const listed = (await api('GET', '/.well-known/mcp-payment')).body.endpoints.map((e: { url: string }) => new URL(e.url).pathname);
    assert.ok(listed.includes('/mcp/alpha') && listed.includes('/mcp/beta'));
    assert.ok(!listed.includes('/mcp/hidden'));
    assert.equal((await call('hidden', 'count')).body.result?.isError, true, 'served (challenged) though not listed');
    await api('POST', `/admin/operators/${bob.id}/suspend`, { key: ADMIN });
    assert.equal((await call('beta', 'count')).status, 404);
    assert.equal((await api('GET', '/operator', { key: bob.key })).status, 403);
    await api('POST', `/admin/operators/${bob.id}/resume`, { key: ADMIN });
    assert.equal((await call('beta', 'count')).status, 200);
  });

  test('an operator suspends a server: not served (404) nor listed, nothing charged, until resumed; another operator cannot', async () => {
    const listed = async () =>
      (await api('GET', '/.well-known/mcp-payment')).body.endpoints.map((e: { url: string }) => new URL(e.url).pathname);
    assert.equal((await api('PATCH', '/operator/servers/beta', { key: alice.key, body: { status: 'suspended' } })).status, 404);
    const runs = upstream.runs();
    const suspended = await api('PATCH', '/operator/servers/beta', { key: bob.key, body: { status: 'suspended' } });
    assert.equal(suspended.status, 200, suspended.text);
    assert.equal(suspended.body.status, 'suspended');
    const key = await api('POST', '/admin/keys', { key: ADMIN, body: { name: 'while suspended', usd: '1' } });
    assert.equal((await call('beta', 'count', { apiKey: key.body.key })).status, 404);
    assert.equal((await api('GET', `/admin/keys/${key.body.id}`, { key: ADMIN })).body.balance, '1000000', 'nothing debited');
    assert.equal(upstream.runs(), runs, 'the upstream never called');
    assert.ok(!(await listed()).includes('/mcp/beta'));
    assert.equal((await api('GET', '/operator/servers/beta', { key: bob.key })).body.status, 'suspended', 'its operator still sees it');
    assert.equal((await api('PATCH', '/operator/servers/beta', { key: bob.key, body: { status: 'paused' } })).status, 400);
    assert.equal((await api('PATCH', '/operator/servers/beta', { key: bob.key, body: { status: 'active' } })).status, 200);
    assert.equal((await call('beta', 'count', { apiKey: key.body.key })).status, 200);
    assert.ok((await listed()).includes('/mcp/beta'));
  });

  test('/openapi.json documents the admin and operator APIs from the validating schemas', async () => {
    const doc = (await api('GET', '/openapi.json')).body;
    assert.equal(doc.openapi, '3.1.0');
    const post = doc.paths['/operator/servers'].post;
    assert.deepEqual(post.security, [{ operator: [] }]);
    const schema = post.requestBody.content['application/json'].schema;
    assert.ok(schema.required.includes('slug') && schema.required.includes('plan'));
    assert.ok(doc.paths['/admin/keys/{id}/topup'].post);
    assert.ok(doc.paths['/operator/analytics'].get.parameters.some((p: { name: string }) => p.name === 'from'));
  });

  test('a server’s upstream credential goes only where it was given: moving the upstream to another origin needs it again', async () => {
    const made = await api('POST', '/operator/servers', {
      key: alice.key,
      body: serverBody('sealed', { auth: { mode: 'header', secret: SECRET } }),
    });
    assert.equal(made.status, 201, made.text);
    // Someone holding the operator's key (or console session) points the server at their own host.
    const elsewhere = 'http://localhost:9/mcp';
    const moved = await api('PATCH', '/operator/servers/sealed', { key: alice.key, body: { upstream: elsewhere } });
    assert.equal(moved.status, 400, moved.text);
    assert.match(moved.body.message, /^auth: an upstream at another origin needs its credential again/);
    const kept = (await api('GET', '/operator/servers', { key: alice.key })).body.servers.find(
      (s: { slug: string }) => s.slug === 'sealed',
    );
    assert.equal(kept.upstream, `${upstream.url}/mcp`, 'nothing changed');
    // Another path on the same origin keeps it; another origin with the credential given again is taken.
    const samePlace = await api('PATCH', '/operator/servers/sealed', { key: alice.key, body: { upstream: `${upstream.url}/other` } });
    assert.equal(samePlace.status, 200, samePlace.text);
    assert.deepEqual(samePlace.body.auth, { mode: 'header', secret: '(set)' });
    const given = await api('PATCH', '/operator/servers/sealed', {
      key: alice.key,
      body: { upstream: elsewhere, auth: { mode: 'header', secret: 'another-secret' } },
    });
    assert.equal(given.status, 200, given.text);
  });

  test('a registered server settles strict unless its operator sets settlement: deferred; then its paid result comes with a receipt naming a transaction not confirmed yet', async () => {
    const made = await api('POST', '/admin/operators', {
      key: ADMIN,
      body: { email: 'carol@example.com', name: 'carol', payoutAddress: chain.sandbox.accounts.payees[0]!.address },
    });
    const carol = { key: made.body.key as string };
    const bad = await api('POST', '/operator/servers', { key: carol.key, body: serverBody('settling', { settlement: 'later' }) });
    assert.equal(bad.status, 400, bad.text);
    assert.match(bad.body.message, /^settlement/);
    const created = await api('POST', '/operator/servers', { key: carol.key, body: serverBody('settling') });
    assert.equal(created.body.settlement, 'strict');
    const strict = await pay('settling', 'count');
    assert.equal(strict.answer.body.result?._meta?.['x402/payment-response'].success, true);

    const patched = await api('PATCH', '/operator/servers/settling', { key: carol.key, body: { settlement: 'deferred' } });
    assert.equal(patched.body.settlement, 'deferred', patched.text);
    const deferred = await pay('settling', 'count');
    assert.equal(deferred.answer.body.result?.isError, undefined);
    const receipt = deferred.answer.body.result?._meta?.['x402/payment-response'];
    assert.equal(receipt.errorReason, 'settlement_pending');
    assert.match(receipt.errorMessage, /^deferred settlement/);
    assert.match(receipt.transaction, /^0x[0-9a-f]{64}$/);

    // Losses are the admin's to see and clear (none here).
    assert.deepEqual((await api('GET', '/admin/losses', { key: ADMIN })).body, { losses: [] });
    assert.equal((await api('GET', '/admin/losses', { key: carol.key })).status, 401);
    const payer = chain.sandbox.accounts.payers[3]!.address;
    assert.deepEqual((await api('POST', `/admin/losses/${payer}/clear`, { key: ADMIN })).body, { payer: payer.toLowerCase(), cleared: 0 });
    assert.equal((await api('POST', '/admin/losses/0x12/clear', { key: ADMIN })).status, 400);
  });

  // Settlement publishes the payment: a watcher who copies it from chain and guesses the call must not read the
  // result kept for the payer's retry. A registered server is served through `/mcp/:slug`, a mount of its own.
  test('a registered server’s paid result sent without an Idempotency-Key is given again only to a retry from the network it was sent from', async () => {
    const made = await api('POST', '/admin/operators', {
      key: ADMIN,
      body: { email: 'dave@example.com', name: 'dave', payoutAddress: chain.sandbox.accounts.payees[1]!.address },
    });
    const created = await api('POST', '/operator/servers', { key: made.body.key as string, body: serverBody('kept') });
    assert.equal(created.status, 201, created.text);
    const paid = await pay('kept', 'count', chain.sandbox.accounts.payers[6]!);
    assert.equal(paid.answer.body.result?._meta?.['x402/payment-response'].success, true);
    const runs = upstream.runs();
    const copied = await call('kept', 'count', { payment: paid.payment, from: elsewhere });
    assert.equal(copied.body.result?.isError, true, 'from another address: the payment is used');
    assert.match(JSON.stringify(copied.body), /nonce_already_used/);
    const again = await call('kept', 'count', { payment: paid.payment });
    assert.deepEqual(again.body.result, paid.answer.body.result, "from the payer's address: the result as first delivered");
    assert.equal(upstream.runs(), runs, 'the tool is not run again');
  });
});
