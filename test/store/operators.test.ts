import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { Address, Hex } from 'viem';
import { flatPlan } from '../../src/pricing/plans.js';
import { newId } from '../../src/store/ids.js';
import type { Charge, OperatorStore, ServerRecord } from '../../src/store/operators/operators.js';
import type { Store } from '../../src/store/store.js';
import { backends } from '../helpers/stores.js';

const DAY_MS = 86_400_000;
const JAN_1 = Date.UTC(2025, 0, 1);
const payTo = '0x00000000000000000000000000000000000000bb' as Address;
const tx = { txHash: `0x${'ab'.repeat(32)}` as Hex, rawTx: '0x02f8' as Hex };

async function newOperator(operators: OperatorStore, fields: { email?: string } = {}) {
  const id = newId('op');
  const created = await operators.createOperator({
    id,
    email: fields.email ?? `${id}@example.com`,
    name: 'Ada',
    keyHash: `hash-${id}`,
    createdAt: Date.now(),
  });
  assert.ok(created.created);
  return id;
}

/** A server of an operator, with fixed times so that lists come back in a known order. */
const serverRecord = (operatorId: string, fields: Partial<ServerRecord> = {}): ServerRecord => ({
  id: newId('srv'),
  operatorId,
  slug: newId('slug'),
  name: 'Counter',
  upstreamUrl: 'https://mcp.example/mcp',
  auth: { mode: 'none' },
  public: true,
  status: 'active',
  custody: 'platform',
  plan: flatPlan({ default: 1000n, tools: {}, free: [] }),
  challenge: 'tool-result',
  settlement: 'strict',
  timeoutMs: 30_000,
  createdAt: 1_000,
  updatedAt: 1_000,
  ...fields,
});

/** A charge whose operator gets `share` of `amount` (default all of it). */
const charge = (operatorId: string, fields: Partial<Charge> & { share?: bigint } = {}): Charge => {
  const { share, ...rest } = fields;
  const amount = rest.amount ?? 1_000n;
  const operatorShare = share ?? amount;
  return {
    id: newId('ch'),
    serverId: 'srv',
    operatorId,
    rail: 'x402',
    caller: '0xcaller',
    tool: 'add',
    amount,
    operatorShare,
    platformShare: amount - operatorShare,
    custody: 'platform',
    ref: newId('ref'),
    state: 'earned',
    createdAt: JAN_1,
    ...rest,
  };
};

const withdrawal = (operatorId: string, amount: bigint, idempotencyKey = newId('idem')) => ({
  id: newId('wd'),
  operatorId,
  amount,
  to: payTo,
  idempotencyKey,
  minimum: 50n,
});
const payout = (operatorId: string, amount: bigint, idempotencyKey = newId('idem')) => ({
  id: newId('po'),
  operatorId,
  amount,
  destination: 'acct_1',
  idempotencyKey,
  minimum: 100n,
});

for (const backend of backends)
  describe(`operator store (${backend.name})`, { skip: backend.skip }, () => {
    const open: Store[] = [];
    after(() => Promise.all(open.map((s) => s.close())));
    /** A store of its own: the tests of global lists (pending charges, unfinished withdrawals) see only their rows. */
    const fresh = async () => {
      const store = await backend.open();
      open.push(store);
      return store.operators;
    };

    test('operators: created once per email, found by key hash, patched', async () => {
      const operators = await fresh();
      const id = await newOperator(operators, { email: 'ada@example.com' });
      assert.deepEqual(
        await operators.createOperator({ id: newId('op'), email: 'ada@example.com', name: 'Other', keyHash: 'other', createdAt: 1 }),
        { created: false },
      );
      assert.equal((await operators.operators()).length, 1);
      const byHash = (await operators.operatorByKeyHash(`hash-${id}`))!;
      assert.equal(byHash.id, id);
      assert.equal(byHash.keyHash, `hash-${id}`);
      assert.equal(byHash.status, 'active');
      assert.equal(await operators.operatorByKeyHash('nope'), undefined);

      const patched = (await operators.updateOperator(id, {
        name: 'Ada L.',
        payoutAddress: payTo,
        stripeAccount: 'acct_9',
        status: 'suspended',
      }))!;
      assert.deepEqual(
        [patched.name, patched.payoutAddress, patched.stripeAccount, patched.status],
        ['Ada L.', payTo, 'acct_9', 'suspended'],
      );
      const cleared = (await operators.updateOperator(id, { payoutAddress: null }))!;
      assert.equal(cleared.payoutAddress, undefined, 'null clears the address');
      assert.equal(cleared.name, 'Ada L.', 'fields not in the patch stay');
      const renamed = (await operators.updateOperator(id, { name: 'Ada' }))!;
      assert.equal(renamed.stripeAccount, 'acct_9');
      assert.deepEqual(await operators.operator(id), renamed);
      assert.deepEqual(await operators.operators(), [renamed]);
      assert.equal(await operators.updateOperator('op_missing', { name: 'x' }), undefined);
    });

    test('servers: one per slug, updated, listed by operator and visibility, served while their operator is active, deleted', async () => {
      const operators = await fresh();
      const [a, b] = [await newOperator(operators), await newOperator(operators)];
      const secret = serverRecord(a, {
        auth: { mode: 'header', name: 'Authorization', sealedSecret: 'sealed:abc' },
        public: false,
        custody: 'direct',
        payTo,
        plan: { type: 'tiered', tiers: [{ upTo: 10, price: 0n }, { price: 5n }], free: ['ping'] },
        challenge: 'http-402',
      });
      assert.deepEqual(await operators.createServer(secret), { created: true });
      assert.deepEqual(await operators.createServer(serverRecord(b, { slug: secret.slug })), { created: false, retired: false });
      assert.deepEqual(await operators.server(secret.slug), secret, 'a plan comes back as it went in');
      const listed = serverRecord(a, { createdAt: 2_000, updatedAt: 2_000 });
      const others = serverRecord(b, { createdAt: 3_000, updatedAt: 3_000 });
      await operators.createServer(listed);
      await operators.createServer(others);

      const slugs = async (filter?: Parameters<OperatorStore['servers']>[0]) => (await operators.servers(filter)).map((s) => s.slug);
      assert.deepEqual(await slugs(), [secret.slug, listed.slug, others.slug]);
      assert.deepEqual(await slugs({ operatorId: a }), [secret.slug, listed.slug]);
      assert.deepEqual(await slugs({ publicOnly: true }), [listed.slug, others.slug]);
      assert.deepEqual(await slugs({ operatorId: a, publicOnly: true }), [listed.slug]);
      assert.equal((await operators.servedServer(listed.slug))?.id, listed.id);
      await operators.updateOperator(a, { status: 'suspended' });
      assert.equal(await operators.servedServer(listed.slug), undefined, 'a suspended operator’s servers are not served');
      assert.equal((await operators.servedServer(others.slug))?.id, others.id);
      await operators.updateOperator(a, { status: 'active' });
      await operators.updateServer({ ...listed, status: 'suspended', updatedAt: 3_500 });
      assert.equal(await operators.servedServer(listed.slug), undefined, 'a suspended server is not served');
      assert.deepEqual(await slugs({ publicOnly: true }), [others.slug], 'nor listed');
      assert.deepEqual(await slugs({ operatorId: a }), [secret.slug, listed.slug], 'its operator still sees it');
      assert.equal((await operators.server(listed.slug))?.status, 'suspended');

      const updated = {
        ...listed,
        name: 'Renamed',
        auth: { mode: 'query' as const, name: 'key', sealedSecret: 's' },
        public: false,
        timeoutMs: 5_000,
        updatedAt: 4_000,
      };
      await operators.updateServer({ ...updated, slug: 'ignored', operatorId: b });
      assert.deepEqual(await operators.server(listed.slug), updated, 'slug and owner never change');

      await operators.deleteServer(listed.id);
      assert.equal(await operators.server(listed.slug), undefined);
      assert.equal(await operators.servedServer(listed.slug), undefined);
      assert.deepEqual(await slugs(), [secret.slug, others.slug]);
      assert.ok((await operators.serverById(listed.id))?.deletedAt, 'a deleted server is still found by its id');
      assert.deepEqual(
        await operators.createServer(serverRecord(b, { slug: listed.slug })),
        { created: true },
        'nothing live refers to it: its slug is free',
      );
    });

    test('a deleted server’s slug is refused while a live subscription, a pending charge or a key scoped by slug alone refers to it', async () => {
      const store = await backend.open();
      open.push(store);
      const { operators } = store;
      const [a, b] = [await newOperator(operators), await newOperator(operators)];
      const keyId = newId('key');
      await store.credits.createKey({ id: keyId, hash: `h-${keyId}`, name: 'customer' });
      const legacyKey = newId('key');
      const subscription = newId('sub');
      const pending = charge(a, { state: 'pending' });
      const holds = {
        subscribed: {
          hold: (s: ServerRecord) =>
            operators.saveSubscription({ id: subscription, keyId, serverId: s.id, status: 'active', currentPeriodEnd: 1, eventAt: 1 }),
          release: () => operators.subscriptionStatus(subscription, 'canceled', 2),
        },
        unsettled: {
          hold: (s: ServerRecord) => operators.recordCharges([{ ...pending, serverId: s.id }]),
          release: () => operators.resolveCharges([{ id: pending.id, state: 'earned' }]),
        },
        scoped: {
          hold: () => store.credits.createKey({ id: legacyKey, hash: `h-${legacyKey}`, name: 'old', scope: { servers: ['scoped'] } }),
          release: () => store.credits.setStatus(legacyKey, 'revoked'),
        },
      };
      for (const [slug, { hold, release }] of Object.entries(holds)) {
        const server = serverRecord(a, { slug, auth: { mode: 'header', name: 'authorization', sealedSecret: 'sealed' } });
        await operators.createServer(server);
        await hold(server);
        await operators.recordCharges([charge(a, { serverId: server.id })]);
        await operators.deleteServer(server.id);
        assert.deepEqual((await operators.serverById(server.id))?.auth, { mode: 'none' }, `${slug}: the upstream secret is not kept`);
        assert.deepEqual(await operators.createServer(serverRecord(b, { slug })), { created: false, retired: true }, `${slug}: retired`);
        await release();
        assert.deepEqual(
          await operators.createServer(serverRecord(b, { slug })),
          { created: true },
          `${slug}: free once released; its history is no hold`,
        );
      }
      const bound = newId('key');
      await store.credits.createKey({
        id: bound,
        hash: `h-${bound}`,
        name: 'bound',
        scope: { servers: ['bound'], serverIds: ['srv_gone'] },
      });
      const gone = serverRecord(a, { id: 'srv_gone', slug: 'bound' });
      await operators.createServer(gone);
      await operators.deleteServer(gone.id);
      assert.deepEqual(
        await operators.createServer(serverRecord(b, { slug: 'bound' })),
        { created: true },
        'a scope bound by id cannot pay the new server: no hold',
      );
    });

    test('countCall: 100 concurrent calls get the numbers 1..100; uncountCall never goes below 0', async () => {
      const operators = await fresh();
      const counted = await Promise.all(Array.from({ length: 100 }, () => operators.countCall('srv', 'key:a', 202501)));
      assert.deepEqual(
        counted.map((c) => Number(c.calls)).sort((x, y) => x - y),
        Array.from({ length: 100 }, (_, i) => i + 1),
      );
      assert.deepEqual(await operators.countCall('srv', 'key:a', 202502), { calls: 1n, delivered: 0n }, 'a new month starts again');
      assert.deepEqual(await operators.countCall('srv', 'key:b', 202501), { calls: 1n, delivered: 0n }, 'each caller has their own count');

      await operators.uncountCall('srv', 'key:a', 202501);
      assert.equal((await operators.countCall('srv', 'key:a', 202501)).calls, 100n, 'the given-back number is used again');
      for (let i = 0; i < 3; i++) await operators.uncountCall('srv', 'key:b', 202501);
      await operators.uncountCall('srv', 'key:nobody', 202501);
      assert.equal((await operators.countCall('srv', 'key:b', 202501)).calls, 1n, 'never below 0');
    });

    test('deliverCall: 50 concurrent deliveries of 100 running calls count 50; never above the calls counted; read with the next count', async () => {
      const operators = await fresh();
      for (let i = 0; i < 100; i++) await operators.countCall('srv', 'key:a', 202501);
      await Promise.all(Array.from({ length: 50 }, () => operators.deliverCall('srv', 'key:a', 202501)));
      assert.deepEqual(await operators.countCall('srv', 'key:a', 202501), { calls: 101n, delivered: 50n });
      assert.deepEqual(await operators.countCall('srv', 'key:a', 202502), { calls: 1n, delivered: 0n }, 'each month its own');

      await operators.countCall('srv', 'key:c', 202501);
      for (let i = 0; i < 3; i++) await operators.deliverCall('srv', 'key:c', 202501);
      await operators.deliverCall('srv', 'key:nobody', 202501);
      assert.deepEqual(await operators.countCall('srv', 'key:c', 202501), { calls: 2n, delivered: 1n }, 'never above the calls');
      await operators.uncountCall('srv', 'key:c', 202501);
      assert.deepEqual(await operators.countCall('srv', 'key:c', 202501), { calls: 2n, delivered: 1n }, 'uncount leaves delivered');
    });

    test('charges: a ref is recorded once; pending becomes earned or void once, keeping its settle time', async () => {
      const operators = await fresh();
      const op = await newOperator(operators);
      const first = charge(op, { state: 'pending', amount: 500n, createdAt: JAN_1 + 2 });
      const second = charge(op, { state: 'pending', createdAt: JAN_1 + 1 });
      const third = charge(op, { state: 'pending', createdAt: JAN_1 + 3 });
      await operators.recordCharges([first, second, third, charge(op, { state: 'earned' })]);
      await operators.recordCharges([{ ...first, id: newId('ch'), amount: 9_000n, operatorShare: 9_000n }]);
      assert.deepEqual(await operators.pendingCharges(10), [second, first, third], 'oldest first, the duplicate ref ignored');
      assert.deepEqual(
        (await operators.pendingCharges(2)).map((c) => c.id),
        [second.id, first.id],
      );

      await operators.resolveCharges([
        { id: first.id, state: 'earned', settleMs: 1_234 },
        { id: second.id, state: 'void' },
      ]);
      await operators.resolveCharges([
        { id: first.id, state: 'void' },
        { id: second.id, state: 'earned', settleMs: 1 },
      ]);
      assert.deepEqual(await operators.pendingCharges(10), [third]);
      const b = await operators.balance(op);
      assert.equal(b.usdcEarned, 1_000n + 500n, 'the first resolution stands');
      assert.equal(b.usdcPending, 1_000n);
      assert.deepEqual((await operators.analytics({ operatorId: op, from: JAN_1, to: JAN_1 + DAY_MS })).settlement, {
        count: 1,
        p50Ms: 1_234,
        p99Ms: 1_234,
      });
    });

    test('credits charges are decided by their debits: closed → earned, refunded → void, open → still pending', async () => {
      const store = await backend.open();
      open.push(store);
      const { operators, credits } = store;
      const op = await newOperator(operators);
      const keyId = newId('key');
      await credits.createKey(
        { id: keyId, hash: `h-${keyId}`, name: 'caller' },
        { amount: 1_000n, reason: 'funds', idempotencyKey: newId('fund') },
      );
      const ids: string[] = [];
      for (let n = 0; n < 3; n++) {
        const debit = await credits.debit({ keyId, amount: 10n, reason: 'call', idempotencyKey: newId('call'), open: true });
        assert.ok(debit.ok);
        ids.push(debit.entry.id);
      }
      const [delivered, failed, running] = ids as [string, string, string];
      const charges = ids.map((id) => charge(op, { rail: 'credits', state: 'pending', amount: 10n, ref: `credits:${id}` }));
      await operators.recordCharges(charges);
      await credits.closeDebits([delivered]);
      await credits.refund(failed, 'failed');
      assert.equal(await operators.resolveCreditCharges(), 2);
      assert.deepEqual(
        (await operators.pendingCharges(10)).map((c) => c.ref),
        [`credits:${running}`],
        'the open one waits',
      );
      assert.equal((await operators.balance(op)).fiatEarned, 10n, 'only the delivered call earned');
      assert.equal(await operators.resolveCreditCharges(), 0, 'decided once');
      await credits.closeDebits([running]);
      assert.equal(await operators.resolveCreditCharges(), 1);
      assert.equal((await operators.balance(op)).fiatEarned, 20n);
    });

    test('post-paid charges are decided by their usage entries: billable → earned, void → void, open → still pending', async () => {
      const store = await backend.open();
      open.push(store);
      const { operators, credits, postpaid } = store;
      const op = await newOperator(operators);
      const keyId = newId('key');
      await credits.createKey({ id: keyId, hash: `h-${keyId}`, name: 'org' });
      const serverId = newId('srv');
      const now = Date.now();
      const account = {
        customer: 'cus_1',
        subscription: `sub_${keyId}`,
        meter: 'm',
        creditLimit: 1_000n,
        periodStart: now,
        status: 'active',
      };
      await postpaid.link({ keyId, serverId, ...account, statusAt: now });
      const ids: string[] = [];
      for (let n = 0; n < 3; n++) {
        const usage = await postpaid.authorize({ keyId, serverId, tool: 't', amount: 10n });
        assert.ok(usage.ok);
        ids.push(usage.entry.id);
      }
      const [delivered, failed, running] = ids as [string, string, string];
      await operators.recordCharges(ids.map((id) => charge(op, { rail: 'invoice', state: 'pending', amount: 10n, ref: `invoice:${id}` })));
      await postpaid.close([delivered]);
      await postpaid.void(failed);
      assert.equal(await operators.resolveInvoiceCharges(), 2);
      assert.deepEqual(
        (await operators.pendingCharges(10)).map((c) => c.ref),
        [`invoice:${running}`],
      );
      const b = await operators.balance(op);
      assert.deepEqual([b.invoiced, b.fiatAvailable, b.usdcAvailable], [10n, 0n, 0n], 'invoiced, not collected: nothing to pay out');
      assert.equal(await operators.resolveInvoiceCharges(), 0, 'decided once');
    });

    test('balance: USDC of platform custody, fiat of credits and subscriptions, direct apart, less withdrawals and payouts', async () => {
      const operators = await fresh();
      const [op, other] = [await newOperator(operators), await newOperator(operators)];
      await operators.recordCharges([
        charge(op, { amount: 1_000n, share: 700n }),
        charge(op, { amount: 400n, share: 300n, state: 'pending' }),
        charge(op, { amount: 900n, share: 900n, state: 'void' }),
        charge(op, { rail: 'credits', amount: 500n, share: 400n }),
        charge(op, { rail: 'subscription', amount: 100n, share: 100n }),
        charge(op, { rail: 'credits', amount: 50n, share: 50n, state: 'pending' }),
        charge(op, { custody: 'direct', amount: 900n, share: 900n }),
        charge(op, { rail: 'free', amount: 0n, share: 0n }),
        charge(op, { rail: 'invoice', amount: 800n, share: 600n }),
        charge(op, { rail: 'invoice', amount: 80n, share: 60n, state: 'pending' }),
        charge(other, { amount: 5_000n }),
      ]);
      assert.deepEqual(await operators.balance(op), {
        usdcEarned: 700n,
        usdcPending: 300n,
        usdcWithdrawn: 0n,
        usdcReserved: 0n,
        usdcAvailable: 700n,
        fiatEarned: 500n,
        fiatPaidOut: 0n,
        fiatReserved: 0n,
        fiatAvailable: 500n,
        direct: 900n,
        invoiced: 600n,
      });

      const done = await operators.requestWithdrawal(withdrawal(op, 200n));
      const failed = await operators.requestWithdrawal(withdrawal(op, 100n));
      const reserved = await operators.requestWithdrawal(withdrawal(op, 150n));
      assert.ok(done.ok && failed.ok && reserved.ok);
      await operators.recordWithdrawalTx(done.record.id, tx);
      await operators.finishWithdrawal(done.record.id, { state: 'confirmed' });
      await operators.finishWithdrawal(failed.record.id, { state: 'failed', error: 'reverted' });
      const paid = await operators.requestPayout(payout(op, 120n));
      const refused = await operators.requestPayout(payout(op, 130n));
      const pendingPayout = await operators.requestPayout(payout(op, 110n));
      assert.ok(paid.ok && refused.ok && pendingPayout.ok);
      await operators.finishPayout(paid.record.id, { state: 'paid', transferId: 'tr_1' });
      await operators.finishPayout(refused.record.id, { state: 'failed', error: 'account closed' });

      const b = await operators.balance(op);
      assert.deepEqual(
        [b.usdcEarned, b.usdcWithdrawn, b.usdcReserved, b.usdcAvailable, b.fiatEarned, b.fiatPaidOut, b.fiatReserved, b.fiatAvailable],
        [700n, 200n, 150n, 350n, 500n, 120n, 110n, 270n],
      );
      assert.equal((await operators.balance('op_nobody')).usdcAvailable, 0n);
    });

    test('20 concurrent withdrawals for more than is available: only what fits is reserved', async () => {
      const operators = await fresh();
      const op = await newOperator(operators);
      await operators.recordCharges([charge(op, { amount: 1_000n })]);
      const results = await Promise.all(Array.from({ length: 20 }, () => operators.requestWithdrawal(withdrawal(op, 300n))));
      assert.equal(results.filter((r) => r.ok && r.created).length, 3);
      for (const r of results.filter((r) => !r.ok)) assert.equal(r.ok || r.reason, 'insufficient_balance');
      const b = await operators.balance(op);
      assert.equal(b.usdcReserved, 900n);
      assert.equal(b.usdcAvailable, 100n);
      assert.equal((await operators.withdrawals(op)).length, 3);
    });

    test('withdrawals: one per idempotency key, minimum enforced, journalled tx, finished once', async () => {
      const operators = await fresh();
      const op = await newOperator(operators);
      await operators.recordCharges([charge(op, { amount: 1_000n })]);

      const request = withdrawal(op, 400n, 'same-key');
      const repeats = await Promise.all(
        [request, { ...request, id: newId('wd'), amount: 900n }, { ...request, id: newId('wd') }].map((r) =>
          operators.requestWithdrawal(r),
        ),
      );
      assert.equal(repeats.filter((r) => r.ok && r.created).length, 1);
      const records = repeats.map((r) => (r.ok ? r.record : undefined));
      assert.ok(
        records.every((r) => r && r.id === records[0]!.id && r.amount === records[0]!.amount),
        'every repeat returns the first record',
      );
      assert.equal((await operators.balance(op)).usdcReserved, records[0]!.amount);
      const first = records[0]!;

      assert.deepEqual(await operators.requestWithdrawal(withdrawal(op, 49n)), {
        ok: false,
        reason: 'below_minimum',
        available: 1_000n - first.amount,
      });
      assert.deepEqual(await operators.requestWithdrawal(withdrawal(op, 700n)), {
        ok: false,
        reason: 'insufficient_balance',
        available: 1_000n - first.amount,
      });
      assert.equal((await operators.withdrawals(op)).length, 1, 'a refusal writes nothing');

      const second = await operators.requestWithdrawal(withdrawal(op, 100n));
      assert.ok(second.ok && second.created);
      assert.deepEqual(
        (await operators.withdrawals(op)).map((w) => w.id),
        [first, second.record].sort((x, y) => y.createdAt - x.createdAt || (y.id < x.id ? -1 : 1)).map((w) => w.id),
        'newest first',
      );
      assert.equal(first.state, 'requested');
      assert.equal(first.to, payTo);

      await operators.recordWithdrawalTx(first.id, tx);
      const submitted = (await operators.withdrawal(first.id))!;
      assert.deepEqual([submitted.state, submitted.txHash, submitted.rawTx], ['submitted', tx.txHash, tx.rawTx]);
      assert.deepEqual((await operators.unfinishedWithdrawals()).map((w) => w.id).sort(), [first.id, second.record.id].sort());
      assert.equal(await operators.setWaitingForGas(second.record.id, true), false, 'only a submitted withdrawal waits for gas');
      assert.deepEqual(
        await Promise.all([operators.setWaitingForGas(first.id, true), operators.setWaitingForGas(first.id, true)]).then((c) => c.sort()),
        [false, true],
        'marked once',
      );
      assert.equal((await operators.withdrawal(first.id))!.waitingForGas, true);

      await operators.finishWithdrawal(first.id, { state: 'confirmed' });
      assert.equal((await operators.withdrawal(first.id))!.waitingForGas, false, 'a finished withdrawal waits for nothing');
      await operators.finishWithdrawal(first.id, { state: 'failed', error: 'too late' });
      await operators.recordWithdrawalTx(first.id, { txHash: `0x${'cd'.repeat(32)}` as Hex, rawTx: '0x00' });
      const confirmed = (await operators.withdrawal(first.id))!;
      assert.deepEqual([confirmed.state, confirmed.error, confirmed.txHash], ['confirmed', undefined, tx.txHash], 'final is final');

      await operators.finishWithdrawal(second.record.id, { state: 'failed', error: 'nonce too low' });
      assert.equal((await operators.withdrawal(second.record.id))!.error, 'nonce too low');
      assert.deepEqual(await operators.unfinishedWithdrawals(), []);
      assert.equal(await operators.withdrawal('wd_missing'), undefined);
      assert.equal((await operators.balance(op)).usdcAvailable, 1_000n - first.amount);
    });

    test('payouts: reserved against the fiat balance, once per idempotency key, finished once', async () => {
      const operators = await fresh();
      const op = await newOperator(operators);
      await operators.recordCharges([charge(op, { rail: 'credits', amount: 1_000n }), charge(op, { amount: 5_000n })]);

      const results = await Promise.all(Array.from({ length: 10 }, () => operators.requestPayout(payout(op, 300n))));
      assert.equal(results.filter((r) => r.ok).length, 3, 'USDC revenue is not fiat');
      const first = results.find((r) => r.ok);
      assert.ok(first?.ok);
      const repeat = await operators.requestPayout({ ...payout(op, 300n), idempotencyKey: first.record.idempotencyKey });
      assert.ok(repeat.ok && !repeat.created && repeat.record.id === first.record.id);
      assert.deepEqual(await operators.requestPayout(payout(op, 50n)), { ok: false, reason: 'below_minimum', available: 100n });

      const [one, two] = (await operators.payouts(op)).map((p) => p.id);
      const paid = await operators.finishPayout(one!, { state: 'paid', transferId: 'tr_1' });
      assert.deepEqual([paid.state, paid.transferId, paid.destination, paid.amount], ['paid', 'tr_1', 'acct_1', 300n]);
      assert.equal((await operators.finishPayout(one!, { state: 'failed', error: 'late' })).state, 'paid', 'final is final');
      const failed = await operators.finishPayout(two!, { state: 'failed', error: 'account closed' });
      assert.deepEqual([failed.state, failed.error, failed.transferId], ['failed', 'account closed', undefined]);
      const b = await operators.balance(op);
      assert.deepEqual([b.fiatPaidOut, b.fiatReserved, b.fiatAvailable, b.usdcAvailable], [300n, 300n, 400n, 5_000n]);
    });

    test('subscriptions: an older event never overwrites a newer; the active one entitles', async () => {
      const store = await backend.open();
      open.push(store);
      const { operators } = store;
      const keyId = newId('key');
      await store.credits.createKey({ id: keyId, hash: `h-${keyId}`, name: 'customer' });
      const now = Date.now();
      const sub = { id: newId('sub'), keyId, serverId: 'srv', status: 'active', currentPeriodEnd: now + DAY_MS, eventAt: 100 };
      await operators.saveSubscription(sub);
      await operators.saveSubscription({ ...sub, status: 'incomplete', currentPeriodEnd: now - 1, eventAt: 99 });
      assert.deepEqual(await operators.subscription(sub.id), sub, 'the older event is ignored');
      assert.deepEqual(await operators.subscriptionStatus(sub.id, 'past_due', 50), sub, 'an older status too');
      assert.deepEqual(await operators.activeSubscription(keyId, 'srv', now), sub);
      assert.equal(await operators.activeSubscription(keyId, 'other', now), undefined);
      assert.equal(await operators.activeSubscription(keyId, 'srv', now + DAY_MS), undefined, 'the period has ended');

      assert.deepEqual(await operators.subscriptionStatus(sub.id, 'past_due', 150), { ...sub, status: 'past_due', eventAt: 150 });
      assert.equal(await operators.activeSubscription(keyId, 'srv', now), undefined, 'a failed payment does not entitle');
      await operators.saveSubscription({ ...sub, status: 'trialing', eventAt: 150 });
      assert.equal((await operators.subscription(sub.id))!.status, 'trialing', 'an event of the same moment applies');

      const longer = { ...sub, id: newId('sub'), currentPeriodEnd: now + 30 * DAY_MS, eventAt: 1 };
      await operators.saveSubscription(longer);
      assert.deepEqual(await operators.activeSubscription(keyId, 'srv', now), longer, 'the one that lasts longest');
      assert.equal(await operators.subscriptionStatus('sub_missing', 'canceled', 1), undefined);
      assert.equal(await operators.subscription('sub_missing'), undefined);
    });

    test('a cancelled subscription stays cancelled: an event of the same second delivered after it (a retry, another order) does not entitle again', async () => {
      const store = await backend.open();
      open.push(store);
      const { operators } = store;
      const keyId = newId('key');
      await store.credits.createKey({ id: keyId, hash: `h-${keyId}`, name: 'customer' });
      const now = Date.now();
      const sub = { id: newId('sub'), keyId, serverId: 'srv', status: 'active', currentPeriodEnd: now + DAY_MS, eventAt: 100 };
      await operators.saveSubscription(sub);
      await operators.saveSubscription({ ...sub, status: 'canceled', eventAt: 200 });
      // customer.subscription.updated of the same second as the deletion, delivered after it.
      await operators.saveSubscription({ ...sub, status: 'active', eventAt: 200 });
      assert.equal(await operators.activeSubscription(keyId, 'srv', now), undefined, 'no allowance after cancellation');
      assert.equal((await operators.subscriptionStatus(sub.id, 'past_due', 300))!.status, 'canceled');
      await operators.saveSubscription({ ...sub, status: 'active', eventAt: 400 });
      assert.equal((await operators.subscription(sub.id))!.status, 'canceled', 'Stripe never reactivates a cancelled subscription');

      const expired = { ...sub, id: newId('sub'), status: 'incomplete_expired', eventAt: 100 };
      await operators.saveSubscription(expired);
      await operators.saveSubscription({ ...expired, status: 'active', eventAt: 100 });
      assert.equal(await operators.activeSubscription(keyId, 'srv', now), undefined, 'nor an expired one');
    });

    test('analytics: by day, tool, rail and caller; void left out; scoped by operator and server; denials', async () => {
      const operators = await fresh();
      const [op, other] = [await newOperator(operators), await newOperator(operators)];
      await operators.createServer(serverRecord(op, { id: 'mine', slug: 'mine' }));
      await operators.createServer(serverRecord(other, { id: 'theirs', slug: 'theirs' }));
      await operators.recordCharges([
        charge(op, { serverId: 'mine', tool: 'add', caller: 'key:a', amount: 1_000n, share: 800n, settleMs: 10, createdAt: JAN_1 + 5 }),
        charge(op, {
          serverId: 'mine',
          tool: 'add',
          caller: 'key:b',
          amount: 3_000n,
          share: 2_400n,
          rail: 'credits',
          settleMs: 30,
          createdAt: JAN_1 + DAY_MS,
        }),
        charge(op, {
          serverId: 'mine',
          tool: 'mul',
          caller: 'key:a',
          amount: 500n,
          share: 400n,
          state: 'pending',
          createdAt: JAN_1 + DAY_MS + 1,
        }),
        charge(op, { serverId: 'mine', tool: 'mul', caller: 'key:c', amount: 0n, rail: 'free', createdAt: JAN_1 + 7 }),
        charge(op, {
          serverId: 'mine',
          tool: 'add',
          caller: 'key:a',
          amount: 7_000n,
          state: 'void',
          settleMs: 99_000,
          createdAt: JAN_1 + 9,
        }),
        charge(op, { serverId: 'old', tool: 'add', caller: 'key:a', amount: 100n, settleMs: 20, createdAt: JAN_1 + 11 }),
        charge(op, { serverId: 'mine', tool: 'add', caller: 'key:a', amount: 100n, createdAt: JAN_1 + 2 * DAY_MS }),
        charge(other, { serverId: 'theirs', tool: 'add', caller: 'key:a', amount: 9_000n, createdAt: JAN_1 }),
      ]);
      await operators.recordCalls({
        charges: [],
        events: [],
        denials: [
          { serverId: 'mine', day: JAN_1 / DAY_MS, reason: 'insufficient_credits', count: 2 },
          { serverId: 'mine', day: JAN_1 / DAY_MS + 1, reason: 'insufficient_credits', count: 1 },
          { serverId: 'mine', day: JAN_1 / DAY_MS, reason: 'invalid_payment', count: 1 },
          { serverId: 'theirs', day: JAN_1 / DAY_MS, reason: 'invalid_payment', count: 5 },
          { serverId: 'mine', day: JAN_1 / DAY_MS + 2, reason: 'invalid_payment', count: 8 },
        ],
      });
      await operators.recordCalls({
        charges: [],
        events: [],
        denials: [{ serverId: 'mine', day: JAN_1 / DAY_MS, reason: 'insufficient_credits', count: 3 }],
      });

      const row = (key: string, calls: number, paidCalls: number, revenue: bigint, operatorShare: bigint) => ({
        key,
        calls,
        paidCalls,
        revenue,
        operatorShare,
      });
      const two = { from: JAN_1, to: JAN_1 + 2 * DAY_MS };
      const mine = await operators.analytics({ operatorId: op, ...two });
      assert.deepEqual(mine.byDay, [row('2025-01-01', 3, 2, 1_100n, 900n), row('2025-01-02', 2, 2, 3_000n, 2_400n)]);
      assert.deepEqual(mine.byTool, [row('add', 3, 3, 4_100n, 3_300n), row('mul', 2, 1, 0n, 0n)]);
      assert.deepEqual(mine.byRail, [row('credits', 1, 1, 3_000n, 2_400n), row('free', 1, 0, 0n, 0n), row('x402', 3, 3, 1_100n, 900n)]);
      assert.deepEqual(mine.byCaller, [row('key:b', 1, 1, 3_000n, 2_400n), row('key:a', 3, 3, 1_100n, 900n), row('key:c', 1, 0, 0n, 0n)]);
      assert.deepEqual(mine.denials, [
        { reason: 'insufficient_credits', count: 6 },
        { reason: 'invalid_payment', count: 1 },
      ]);
      assert.deepEqual(mine.settlement, { count: 3, p50Ms: 20, p99Ms: 30 });

      const server = await operators.analytics({ operatorId: op, serverId: 'mine', from: JAN_1, to: JAN_1 + DAY_MS });
      assert.deepEqual(server.byTool, [row('add', 1, 1, 1_000n, 800n), row('mul', 1, 0, 0n, 0n)]);
      assert.deepEqual(server.denials, [
        { reason: 'insufficient_credits', count: 5 },
        { reason: 'invalid_payment', count: 1 },
      ]);
      const everyone = await operators.analytics({ from: JAN_1, to: JAN_1 + DAY_MS });
      assert.deepEqual(
        everyone.byRail.find((r) => r.key === 'x402'),
        row('x402', 3, 3, 10_100n, 9_900n),
      );
      assert.deepEqual(everyone.denials, [
        { reason: 'invalid_payment', count: 6 },
        { reason: 'insufficient_credits', count: 5 },
      ]);
      // A deferred x402 payment delivered and then failed on chain: void, lost, counted as a loss and never as revenue.
      const lost = charge(op, { serverId: 'mine', tool: 'add', caller: 'key:d', amount: 500n, state: 'pending', createdAt: JAN_1 + 12 });
      await operators.recordCharges([lost]);
      await operators.resolveCharges([{ id: lost.id, state: 'void', lost: true }]);
      const withLoss = await operators.analytics({ operatorId: op, ...two });
      assert.deepEqual(withLoss.losses, { count: 1, amount: 500n });
      assert.deepEqual(withLoss.byRail, mine.byRail);
      assert.deepEqual(mine.losses, { count: 0, amount: 0n });
      const empty = await operators.analytics({ operatorId: op, from: JAN_1 + 10 * DAY_MS, to: JAN_1 + 11 * DAY_MS });
      assert.deepEqual(empty, {
        byDay: [],
        byTool: [],
        byRail: [],
        byCaller: [],
        denials: [],
        settlement: { count: 0 },
        losses: { count: 0, amount: 0n },
      });
    });

    test('audit log: newest first, paged by id, filtered by operator', async () => {
      const operators = await fresh();
      const [op, other] = [await newOperator(operators), await newOperator(operators)];
      const entries = Array.from({ length: 5 }, (_, i) => ({
        id: newId('au'),
        at: JAN_1 + i,
        actor: i === 4 ? 'admin' : `operator:${op}`,
        ...(i === 4 ? {} : { operatorId: i === 3 ? other : op }),
        action: `action.${i}`,
        ...(i === 0 ? { target: 'srv', ip: '203.0.113.7', detail: { price: '1000', nested: { ok: true } } } : {}),
      }));
      for (const entry of entries) await operators.audit(entry);

      const newest = [...entries].reverse();
      assert.deepEqual(await operators.auditLog({ limit: 10 }), newest);
      const page = await operators.auditLog({ limit: 2 });
      assert.deepEqual(page, newest.slice(0, 2));
      assert.deepEqual(await operators.auditLog({ limit: 2, before: page[1]!.id }), newest.slice(2, 4));
      assert.deepEqual(await operators.auditLog({ operatorId: op, limit: 10 }), [entries[2], entries[1], entries[0]]);
      assert.deepEqual(await operators.auditLog({ operatorId: op, limit: 10, before: entries[2]!.id }), [entries[1], entries[0]]);
    });

    if (backend.name === 'postgres')
      test('two instances on one database: concurrent withdrawals from both reserve only what is available', async () => {
        const openShared = backend.shared();
        const [a, b] = [await openShared(), await openShared()];
        open.push(a, b);
        assert.notEqual(a.pool, b.pool);
        const op = await newOperator(a.operators);
        await a.operators.recordCharges([charge(op, { amount: 1_000n })]);
        const results = await Promise.all(
          Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).operators.requestWithdrawal(withdrawal(op, 70n))),
        );
        assert.equal(results.filter((r) => r.ok).length, 14);
        assert.equal((await b.operators.balance(op)).usdcAvailable, 20n);

        const numbers = await Promise.all(
          Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).operators.countCall('srv', 'key:a', 202501)),
        );
        assert.deepEqual(
          numbers.map((c) => Number(c.calls)).sort((x, y) => x - y),
          Array.from({ length: 40 }, (_, i) => i + 1),
        );
        await Promise.all(Array.from({ length: 30 }, (_, i) => (i % 2 ? a : b).operators.deliverCall('srv', 'key:a', 202501)));
        assert.deepEqual(
          await a.operators.countCall('srv', 'key:a', 202501),
          { calls: 41n, delivered: 30n },
          'deliveries from both instances add up',
        );
      });
  });
