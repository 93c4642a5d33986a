import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { generateApiKey } from '../../src/rails/credits/api-keys.js';
import type { CreditStore } from '../../src/store/credits.js';
import { type SqliteStore, openSqliteStore } from '../../src/store/sqlite.js';

const run = promisify(execFile);
const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-credits-'));
let store: SqliteStore;
let credits: CreditStore;

async function newKey(micro: bigint, fields: Partial<Parameters<CreditStore['createKey']>[0]> = {}) {
  const { id, hash } = generateApiKey();
  const created = await credits.createKey({ id, hash, name: 'test', ...fields }, micro > 0n ? { amount: micro, reason: 'seed', idempotencyKey: `seed:${id}` } : undefined);
  assert.ok(created.created);
  return created.key.id;
}

/** The invariant behind every balance: it equals the sum of its ledger entries. */
async function assertBalanced(keyId: string) {
  const entries = await credits.history(keyId, { limit: 10_000 });
  const sum = entries.reduce((s, e) => s + e.amount, 0n);
  assert.equal((await credits.key(keyId))!.balance, sum);
  return sum;
}

describe('credits ledger (SQLite)', () => {
  before(async () => {
    store = await openSqliteStore({ path: path.join(dir, 'credits.db') });
    credits = store.credits;
  });
  after(() => store.close());

  test('500 concurrent debits against a balance for 100: exactly 100 pass, the balance ends at 0, never below', async () => {
    const keyId = await newKey(1_000_000n);
    const results = await Promise.all(
      Array.from({ length: 500 }, (_, i) => credits.debit({ keyId, amount: 10_000n, reason: 'call', idempotencyKey: `c:${keyId}:${i}` })),
    );
    assert.equal(results.filter((r) => r.ok).length, 100);
    assert.ok(results.filter((r) => !r.ok).every((r) => !r.ok && r.reason === 'insufficient_balance'));
    assert.equal(await assertBalanced(keyId), 0n);
  });

  test('two processes debiting one key on one file never overdraw it', async () => {
    const keyId = await newKey(2_000_000n);
    const startAt = String(Date.now() + 1500);
    const file = path.join(dir, 'credits.db');
    const fixture = path.join(import.meta.dirname, 'fixtures', 'debit-many.ts');
    const outputs = await Promise.all(
      [0, 1].map(() => run(process.execPath, ['--import', 'tsx', fixture, file, keyId, '30000', '60', startAt])),
    );
    const passed = outputs.reduce((n, o) => n + Number(o.stdout), 0);
    assert.equal(passed, 66); // 2.00 / 0.03 = 66 whole debits
    assert.equal(await assertBalanced(keyId), 20_000n);
  });

  test('a credit applies once per idempotency key; a refund returns a debit once', async () => {
    const keyId = await newKey(0n);
    const first = await credits.credit({ keyId, kind: 'topup', amount: 500n, reason: 'x', idempotencyKey: 'once' });
    const again = await credits.credit({ keyId, kind: 'topup', amount: 500n, reason: 'x', idempotencyKey: 'once' });
    assert.equal(first.applied, true);
    assert.equal(again.applied, false);
    assert.equal(again.entry.id, first.entry.id);
    const debit = await credits.debit({ keyId, amount: 200n, reason: 'call', idempotencyKey: 'd1' });
    assert.ok(debit.ok);
    assert.equal((await credits.refund(debit.entry.id, 'upstream failed')).balance, 500n);
    assert.equal((await credits.refund(debit.entry.id, 'upstream failed')).balance, 500n);
    assert.equal(await assertBalanced(keyId), 500n);
    await assert.rejects(credits.debit({ keyId, amount: 1n, reason: 'call', idempotencyKey: 'd1' }), /UNIQUE/);
  });

  test('daily and lifetime limits, and refunds give the allowance back', async () => {
    const keyId = await newKey(10_000n, { dailyLimit: 300n, lifetimeLimit: 500n });
    const d = (n: number, amount = 100n) => credits.debit({ keyId, amount, reason: 'call', idempotencyKey: `lim:${keyId}:${n}` });
    for (let i = 0; i < 3; i++) assert.ok((await d(i)).ok);
    const refused = await d(3);
    assert.deepEqual(refused, { ok: false, reason: 'daily_limit', balance: 9_700n, limitRemaining: 0n });
    const last = (await credits.history(keyId, { limit: 1 }))[0]!;
    await credits.refund(last.id, 'failed');
    assert.ok((await d(4)).ok);
    assert.equal((await credits.key(keyId))!.spentToday, 300n);
  });

  test('a budget token spends within its cap and the key’s balance; revocation stops it', async () => {
    const keyId = await newKey(1_000n);
    const now = Date.now();
    await credits.createToken({ id: 'bt_test1', keyId, cap: 250n, expiresAt: now + 60_000, createdAt: now });
    const spend = (n: number, amount = 100n) => credits.debit({ keyId, tokenId: 'bt_test1', amount, reason: 'call', idempotencyKey: `bt:${n}` });
    const results = await Promise.all([1, 2, 3, 4].map((n) => spend(n)));
    assert.equal(results.filter((r) => r.ok).length, 2);
    assert.deepEqual(results.find((r) => !r.ok), { ok: false, reason: 'budget_exhausted', balance: 800n, tokenRemaining: 50n });
    assert.ok((await spend(5, 50n)).ok);
    assert.equal((await credits.token('bt_test1'))!.spent, 250n);
    await credits.revokeToken(keyId, 'bt_test1');
    const refund = (await credits.history(keyId, { limit: 1 }))[0]!;
    await credits.refund(refund.id, 'failed');
    assert.equal((await spend(6, 10n)).ok, false);
    assert.equal(((await spend(7, 10n)) as { reason: string }).reason, 'token_revoked');
  });

  test('suspended, revoked and expired keys cannot spend; revoked is final', async () => {
    const keyId = await newKey(1_000n);
    await credits.setStatus(keyId, 'suspended');
    assert.equal(((await credits.debit({ keyId, amount: 1n, reason: 'x', idempotencyKey: 's1' })) as { reason: string }).reason, 'key_suspended');
    await credits.setStatus(keyId, 'revoked');
    assert.equal((await credits.setStatus(keyId, 'active'))!.status, 'revoked');
    const expired = await newKey(1_000n, { expiresAt: Date.now() - 1 });
    assert.equal(((await credits.debit({ keyId: expired, amount: 1n, reason: 'x', idempotencyKey: 's2' })) as { reason: string }).reason, 'key_expired');
  });

  test('a Stripe session is credited once, whichever event and however often it arrives', async () => {
    const keyId = await newKey(0n);
    await credits.recordCheckout({ sessionId: 'cs_1', keyId, package: '10', credits: 10_000_000n, amountTotal: 1000n, currency: 'usd' });
    const deliver = (eventId: string, type = 'checkout.session.completed') => credits.completeCheckout({ eventId, type, sessionId: 'cs_1', amountTotal: 1000n });
    const outcomes = await Promise.all([deliver('evt_1'), deliver('evt_1'), deliver('evt_2', 'checkout.session.async_payment_succeeded')]);
    assert.deepEqual(outcomes.sort(), ['credited', 'duplicate_event', 'duplicate_session']);
    assert.equal(await assertBalanced(keyId), 10_000_000n);
    assert.equal(await credits.completeCheckout({ eventId: 'evt_3', type: 'checkout.session.completed', sessionId: 'cs_unknown', amountTotal: 1n }), 'unknown_session');
  });
});
