import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs, { mkdtempSync, rmSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { generateApiKey } from '../../src/rails/credits/api-keys.js';
import type { CreditStore } from '../../src/store/credits/credits.js';
import { newId } from '../../src/store/ids.js';
import { migrations } from '../../src/store/migrations.js';
import { type PostgresStore, openPostgresStore } from '../../src/store/postgres.js';
import { type SqliteStore, openSqliteStore } from '../../src/store/sqlite.js';
import { migrateSqlite } from '../../src/store/sqlite-migrate.js';
import type { Store } from '../../src/store/store.js';
import { POSTGRES_URL, backends, freshSchema } from '../helpers/stores.js';

const run = promisify(execFile);

async function newKey(credits: CreditStore, micro: bigint, fields: Partial<Parameters<CreditStore['createKey']>[0]> = {}) {
  const { id, hash } = generateApiKey();
  const created = await credits.createKey(
    { id, hash, name: 'test', ...fields },
    micro > 0n ? { amount: micro, reason: 'seed', idempotencyKey: `seed:${id}` } : undefined,
  );
  assert.ok(created.created);
  return created.key.id;
}

/** A debit once it is on disk, as the gateway answers it (`durable` settled and left out). */
async function debit(credits: CreditStore, request: Parameters<CreditStore['debit']>[0]) {
  const { durable, ...result } = await credits.debit(request);
  await durable;
  return result;
}

/** The invariant behind every balance: it equals the sum of its ledger entries. */
async function assertBalanced(credits: CreditStore, keyId: string) {
  const entries = await credits.history(keyId, { limit: 10_000 });
  const sum = entries.reduce((s, e) => s + e.amount, 0n);
  assert.equal((await credits.key(keyId))!.balance, sum);
  return sum;
}

/** One database two processes can open: a file for SQLite, a schema for PostgreSQL. */
function sharedDatabase(backend: 'sqlite' | 'postgres') {
  if (backend === 'postgres') return { url: POSTGRES_URL, schema: freshSchema(), max: 3 };
  const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-credits-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  return { path: path.join(dir, 'credits.db') };
}

for (const backend of backends)
  describe(`credits ledger (${backend.name})`, { skip: backend.skip }, () => {
    let store: Store;
    let credits: CreditStore;
    const key = (micro: bigint, fields?: Partial<Parameters<CreditStore['createKey']>[0]>) => newKey(credits, micro, fields);
    const balanced = (keyId: string) => assertBalanced(credits, keyId);
    before(async () => {
      store = await backend.open();
      credits = store.credits;
    });

    test('a key holder’s low-balance alert is kept with the key, read back by authentication, and cleared', async () => {
      const id = await key(1_000n);
      assert.equal((await credits.setLowBalanceAlert(id, 500n))?.lowBalanceAlert, 500n);
      assert.equal((await credits.key(id))?.lowBalanceAlert, 500n);
      assert.equal((await credits.setLowBalanceAlert(id, null))?.lowBalanceAlert, undefined);
      assert.equal(await credits.setLowBalanceAlert('key_unknown', 1n), undefined);
      await assert.rejects(credits.setLowBalanceAlert(id, 0n), 'a threshold of zero is refused by the database');
    });
    after(() => store?.close());

    test('500 concurrent debits against a balance for 100: exactly 100 pass, the balance ends at 0, never below', async () => {
      const keyId = await key(1_000_000n);
      const results = await Promise.all(
        Array.from({ length: 500 }, (_, i) =>
          debit(credits, { keyId, amount: 10_000n, reason: 'call', idempotencyKey: `c:${keyId}:${i}` }),
        ),
      );
      assert.equal(results.filter((r) => r.ok).length, 100);
      assert.ok(results.filter((r) => !r.ok).every((r) => !r.ok && r.reason === 'insufficient_balance'));
      assert.equal(await balanced(keyId), 0n);
    });

    test('two processes debiting one key on one database never overdraw it', async () => {
      const database = sharedDatabase(backend.name);
      const shared = await (backend.name === 'sqlite'
        ? openSqliteStore(database as { path: string })
        : openPostgresStore(database as { url: string }));
      try {
        const keyId = await newKey(shared.credits, 2_000_000n);
        const startAt = String(Date.now() + 1500);
        const fixture = path.join(import.meta.dirname, 'fixtures', 'debit-many.ts');
        const outputs = await Promise.all(
          [0, 1].map(() =>
            run(process.execPath, ['--import', 'tsx', fixture, backend.name, JSON.stringify(database), keyId, '30000', '60', startAt]),
          ),
        );
        const passed = outputs.reduce((n, o) => n + Number(o.stdout), 0);
        assert.equal(passed, 66); // 2.00 / 0.03 = 66 whole debits
        assert.equal(await assertBalanced(shared.credits, keyId), 20_000n);
      } finally {
        await shared.close();
      }
    });

    test('request counts per key and minute: each of many concurrent requests gets its own number; older windows are forgotten', async () => {
      const window = 1_800_000_000_000;
      const counts = await Promise.all(Array.from({ length: 60 }, (_, i) => store.credits.countRequest(i % 2 ? 'key_a' : 'key_b', window)));
      assert.deepEqual(
        counts.filter((_, i) => i % 2).sort((x, y) => Number(x - y)),
        Array.from({ length: 30 }, (_, i) => BigInt(i + 1)),
      );
      assert.equal(await store.credits.countRequest('key_a', window + 60_000), 1n, 'a new window starts at 1');
      assert.equal(await store.credits.countRequest('key_b', window), 31n);
    });

    test('a credit applies once per idempotency key; a refund returns a debit once', async () => {
      const keyId = await key(0n);
      const first = await credits.credit({ keyId, kind: 'topup', amount: 500n, reason: 'x', idempotencyKey: `once:${keyId}` });
      const again = await credits.credit({ keyId, kind: 'topup', amount: 500n, reason: 'x', idempotencyKey: `once:${keyId}` });
      assert.equal(first.applied, true);
      assert.equal(again.applied, false);
      assert.equal(again.entry.id, first.entry.id);
      const debited = await debit(credits, { keyId, amount: 200n, reason: 'call', idempotencyKey: `d1:${keyId}` });
      assert.ok(debited.ok);
      const refunds = await Promise.all([
        credits.refund(debited.entry.id, 'upstream failed'),
        credits.refund(debited.entry.id, 'upstream failed'),
      ]);
      assert.deepEqual(refunds, [{ balance: 500n }, { balance: 500n }]);
      assert.equal(await balanced(keyId), 500n);
      await assert.rejects(
        debit(credits, { keyId, amount: 1n, reason: 'call', idempotencyKey: `d1:${keyId}` }),
        /UNIQUE|unique constraint/,
      );
    });

    test('concurrent credits under one idempotency key, on one key or on several, apply once', async () => {
      const keys = await Promise.all(Array.from({ length: 8 }, () => key(0n)));
      const idempotencyKey = newId('race');
      const results = await Promise.all(
        [...keys, ...keys].map((keyId) => credits.credit({ keyId, kind: 'topup', amount: 700n, reason: 'x', idempotencyKey })),
      );
      assert.equal(results.filter((r) => r.applied).length, 1);
      assert.equal(new Set(results.map((r) => r.entry.id)).size, 1);
      let total = 0n;
      for (const keyId of keys) total += await balanced(keyId);
      assert.equal(total, 700n);
    });

    test('daily and lifetime limits, and refunds give the allowance back', async () => {
      const keyId = await key(10_000n, { dailyLimit: 300n, lifetimeLimit: 500n });
      const d = (n: number, amount = 100n) => debit(credits, { keyId, amount, reason: 'call', idempotencyKey: `lim:${keyId}:${n}` });
      for (let i = 0; i < 3; i++) assert.ok((await d(i)).ok);
      const refused = await d(3);
      assert.deepEqual(refused, { ok: false, reason: 'daily_limit', balance: 9_700n, limitRemaining: 0n });
      const last = (await credits.history(keyId, { limit: 1 }))[0]!;
      await credits.refund(last.id, 'failed');
      assert.ok((await d(4)).ok);
      assert.equal((await credits.key(keyId))!.spentToday, 300n);
      const lifetime = await key(10_000n, { lifetimeLimit: 250n });
      assert.ok((await debit(credits, { keyId: lifetime, amount: 200n, reason: 'call', idempotencyKey: `lt1:${lifetime}` })).ok);
      assert.deepEqual(await debit(credits, { keyId: lifetime, amount: 100n, reason: 'call', idempotencyKey: `lt2:${lifetime}` }), {
        ok: false,
        reason: 'lifetime_limit',
        balance: 9_800n,
        limitRemaining: 50n,
      });
    });

    test('a budget token spends within its cap and the key’s balance; revocation stops it', async () => {
      const keyId = await key(1_000n);
      const now = Date.now();
      const tokenId = newId('bt');
      await credits.createToken({ id: tokenId, keyId, cap: 250n, expiresAt: now + 60_000, createdAt: now });
      const spend = (n: number, amount = 100n) =>
        debit(credits, { keyId, tokenId, amount, reason: 'call', idempotencyKey: `bt:${tokenId}:${n}` });
      const results = await Promise.all([1, 2, 3, 4].map((n) => spend(n)));
      assert.equal(results.filter((r) => r.ok).length, 2);
      assert.deepEqual(
        results.find((r) => !r.ok),
        { ok: false, reason: 'budget_exhausted', balance: 800n, tokenRemaining: 50n },
      );
      assert.ok((await spend(5, 50n)).ok);
      assert.equal((await credits.token(tokenId))!.spent, 250n);
      assert.equal((await credits.revokeToken(keyId, tokenId))!.revokedAt !== undefined, true);
      const refund = (await credits.history(keyId, { limit: 1 }))[0]!;
      await credits.refund(refund.id, 'failed');
      assert.equal((await credits.token(tokenId))!.spent, 200n);
      assert.equal(((await spend(7, 10n)) as { reason: string }).reason, 'token_revoked');
      assert.deepEqual(
        (await credits.tokens(keyId)).map((t) => t.id),
        [tokenId],
      );
    });

    test('suspended, revoked and expired keys cannot spend; revoked is final', async () => {
      const keyId = await key(1_000n);
      await credits.setStatus(keyId, 'suspended');
      assert.equal(
        ((await debit(credits, { keyId, amount: 1n, reason: 'x', idempotencyKey: `s1:${keyId}` })) as { reason: string }).reason,
        'key_suspended',
      );
      await credits.setStatus(keyId, 'revoked');
      assert.equal((await credits.setStatus(keyId, 'active'))!.status, 'revoked');
      const expired = await key(1_000n, { expiresAt: Date.now() - 1 });
      assert.equal(
        ((await debit(credits, { keyId: expired, amount: 1n, reason: 'x', idempotencyKey: `s2:${expired}` })) as { reason: string }).reason,
        'key_expired',
      );
    });

    test('an Idempotency-Key request debits once: a concurrent twin is refused as in progress, a refund frees the key', async () => {
      const keyId = await key(1_000n);
      const request = { idempotencyKey: newId('idem'), bodyHash: 'h1' };
      const call = (n: number) =>
        debit(credits, { keyId, amount: 100n, reason: 'call', idempotencyKey: `rq:${keyId}:${n}`, request, open: true });
      const results = await Promise.all([1, 2, 3].map(call));
      const won = results.filter((r) => r.ok);
      assert.equal(won.length, 1);
      assert.deepEqual(
        results.filter((r) => !r.ok),
        [
          { ok: false, reason: 'request_in_progress' },
          { ok: false, reason: 'request_in_progress' },
        ],
      );
      assert.equal(await balanced(keyId), 900n);
      const debitId = won[0]!.ok ? won[0]!.entry.id : '';
      assert.deepEqual(await credits.request(keyId, request.idempotencyKey), { bodyHash: 'h1', debitId });
      await credits.completeRequest(keyId, request.idempotencyKey, '{"done":true}');
      assert.equal((await credits.request(keyId, request.idempotencyKey))!.response, '{"done":true}');
      await credits.refund(debitId, 'failed');
      assert.equal(await credits.request(keyId, request.idempotencyKey), undefined);
      assert.ok((await call(4)).ok, 'after the refund the request runs again');
    });

    test('open debits stay open until closed (charged) or refunded (what they mean for revenue: test/store/operators.test.ts)', async () => {
      const keyId = await key(1_000n);
      const ids: string[] = [];
      for (const n of [1, 2, 3]) {
        const debited = await debit(credits, { keyId, amount: 10n, reason: 'call', idempotencyKey: `open:${keyId}:${n}`, open: true });
        assert.ok(debited.ok);
        ids.push(debited.entry.id);
      }
      const [delivered, failed, running] = ids as [string, string, string];
      // Sorted: debits made in one millisecond have no order among themselves.
      const mine = async () => (await credits.openDebits(Date.now() + 1)).filter((id) => ids.includes(id)).sort();
      assert.deepEqual(await mine(), ids);
      await credits.closeDebits([delivered]);
      await credits.refund(failed, 'failed');
      assert.deepEqual(await mine(), [running]);
      assert.deepEqual(await credits.openDebits(0), []);
    });

    test('adjustments and transfers apply once and never take a balance below zero; opposite transfers do not deadlock', async () => {
      const [a, b] = [await key(1_000n), await key(1_000n)];
      const transfer = (from: string, to: string, amount: bigint, idempotencyKey = newId('mv')) =>
        credits.move({ from, to, amount, reason: 'x', idempotencyKey });
      const once = newId('mv');
      const first = await transfer(a, b, 300n, once);
      assert.ok(first.ok && first.applied);
      assert.deepEqual(
        first.entries.map((e) => [e.kind, e.keyId, e.amount, e.balanceAfter]),
        [
          ['transfer', a, -300n, 700n],
          ['transfer', b, 300n, 1_300n],
        ],
      );
      assert.deepEqual(await transfer(a, b, 300n, once), { ok: true, applied: false, entries: first.entries });
      assert.deepEqual(await transfer(a, b, 701n), { ok: false, reason: 'insufficient_balance', keyId: a, balance: 700n });
      assert.deepEqual(await transfer(a, 'key_unknown', 1n), { ok: false, reason: 'key_unknown', keyId: 'key_unknown' });
      assert.deepEqual(await credits.move({ from: b, amount: 1_301n, reason: 'x', idempotencyKey: newId('adj') }), {
        ok: false,
        reason: 'insufficient_balance',
        keyId: b,
        balance: 1_300n,
      });
      const adjusted = await credits.move({ to: a, amount: 50n, reason: 'goodwill', idempotencyKey: newId('adj') });
      assert.ok(adjusted.ok && adjusted.entries[0]!.kind === 'adjustment');
      const results = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? transfer(a, b, 10n) : transfer(b, a, 10n))));
      assert.ok(results.every((r) => r.ok && r.applied));
      assert.deepEqual([await balanced(a), await balanced(b)], [750n, 1_300n]);
    });

    test('a repeated initial top-up creates no second key; keys() lists one operator’s keys', async () => {
      const idempotencyKey = newId('create');
      const create = () => {
        const { id, hash } = generateApiKey();
        return credits.createKey({ id, hash, name: 'twin' }, { amount: 100n, reason: 'seed', idempotencyKey });
      };
      // Several rounds of four at once: a twin that commits between another's look and its insert must still make no key.
      for (let round = 0; round < 8; round++) {
        const again = newId('create');
        const quads = await Promise.all(
          Array.from({ length: 4 }, () => {
            const { id, hash } = generateApiKey();
            return credits.createKey({ id, hash, name: 'quad' }, { amount: 100n, reason: 'seed', idempotencyKey: again });
          }),
        );
        assert.deepEqual(quads.map((t) => t.created).sort(), [false, false, false, true]);
      }
      const twins = await Promise.all([create(), create()]);
      assert.deepEqual(twins.map((t) => t.created).sort(), [false, true]);
      const made = twins.find((t) => t.created)!;
      const kept = twins.find((t) => !t.created)!;
      assert.ok(made.created && !kept.created);
      assert.equal(kept.entry.keyId, made.key.id);
      assert.equal(made.key.balance, 100n);
      const { created, operator } = await store.operators.createOperator({
        id: newId('op'),
        email: `${newId('e')}@example.com`,
        name: 'op',
        createdAt: Date.now(),
        keyHash: newId('h'),
      });
      assert.ok(created);
      const { id, hash } = generateApiKey();
      await credits.createKey({ id, hash, name: 'customer', operatorId: operator!.id });
      assert.deepEqual(
        (await credits.keys({ operatorId: operator!.id })).map((k) => [k.id, k.operatorId]),
        [[id, operator!.id]],
      );
      assert.ok((await credits.keys()).some((k) => k.id === made.key.id));
      assert.deepEqual(await credits.keyByHash(hash), { ...(await credits.key(id)), hash });
    });

    test('a Stripe session is credited once, whichever event and however often it arrives', async () => {
      const keyId = await key(0n);
      const sessionId = newId('cs');
      await credits.recordCheckout({ sessionId, keyId, package: '10', credits: 10_000_000n, amountTotal: 1000n, currency: 'usd' });
      const deliver = (eventId: string, type = 'checkout.session.completed') =>
        credits.completeCheckout({ eventId, type, sessionId, amountTotal: 1000n, currency: 'usd' });
      const [e1, e2] = [newId('evt'), newId('evt')];
      const outcomes = await Promise.all([deliver(e1), deliver(e1), deliver(e2, 'checkout.session.async_payment_succeeded')]);
      assert.deepEqual(outcomes.sort(), ['credited', 'duplicate_event', 'duplicate_session']);
      assert.equal(await balanced(keyId), 10_000_000n);
      assert.equal(
        await credits.completeCheckout({
          eventId: newId('evt'),
          type: 'checkout.session.completed',
          sessionId: 'cs_unknown',
          amountTotal: 1n,
          currency: 'usd',
        }),
        'unknown_session',
      );
      const ignored = newId('evt');
      await credits.ignoreEvent({ eventId: ignored, type: 'customer.created' });
      assert.equal(
        await credits.completeCheckout({
          eventId: ignored,
          type: 'checkout.session.completed',
          sessionId,
          amountTotal: 1000n,
          currency: 'usd',
        }),
        'duplicate_event',
      );
      assert.equal(await balanced(keyId), 10_000_000n);
    });

    test('a session paid in another currency, another amount or for a revoked key is held for review, never credited as is; a later matching event or the admin resolves it once', async () => {
      const keyId = await key(0n);
      const open = async () => {
        const sessionId = newId('cs');
        await credits.recordCheckout({ sessionId, keyId, package: '10', credits: 10_000_000n, amountTotal: 1000n, currency: 'usd' });
        return sessionId;
      };
      const pay = (sessionId: string, amountTotal: bigint, currency = 'usd') =>
        credits.completeCheckout({ eventId: newId('evt'), type: 'checkout.session.completed', sessionId, amountTotal, currency });

      const yen = await open();
      assert.equal(await pay(yen, 1000n, 'jpy'), 'held_for_review');
      const wrong = await open();
      assert.equal(await pay(wrong, 999n), 'held_for_review');
      assert.equal(await balanced(keyId), 0n, 'nothing credited');
      const held = await credits.checkouts('review', 10);
      assert.deepEqual(
        held.map((c) => [c.sessionId, c.reviewReason, c.paid]),
        [
          [yen, 'currency_mismatch', { amount: 1000n, currency: 'jpy' }],
          [wrong, 'amount_mismatch', { amount: 999n, currency: 'usd' }],
        ],
      );
      assert.deepEqual(
        await Promise.all([pay(wrong, 1000n), pay(wrong, 1000n)]).then((o) => o.sort()),
        ['credited', 'duplicate_session'],
        'the matching event credits, once',
      );
      assert.equal(await balanced(keyId), 10_000_000n);

      assert.deepEqual(await credits.resolveCheckout(yen, { action: 'credit', keyId: 'key_nobody' }), {
        ok: false,
        reason: 'key_unusable',
        session: (await credits.checkouts('review', 10))[0],
      });
      const resolved = await credits.resolveCheckout(yen, { action: 'credit' });
      assert.ok(resolved.ok);
      assert.equal(resolved.session.state, 'credited');
      assert.equal((await credits.resolveCheckout(yen, { action: 'credit' })).ok, false, 'once');
      assert.equal(await balanced(keyId), 20_000_000n);

      const revokedLater = await open();
      await credits.setStatus(keyId, 'revoked');
      assert.equal(await pay(revokedLater, 1000n), 'held_for_review', 'no money onto a dead key');
      assert.deepEqual(
        (await credits.checkouts('review', 10)).map((c) => [c.sessionId, c.reviewReason]),
        [[revokedLater, 'key_revoked']],
      );
      const replacement = await key(0n);
      const moved = await credits.resolveCheckout(revokedLater, { action: 'credit', keyId: replacement });
      assert.ok(moved.ok);
      assert.equal(moved.entry?.keyId, replacement, 'credited to the holder’s replacement');
      assert.equal(await balanced(replacement), 10_000_000n);
      const rejected = await open();
      await pay(rejected, 1n);
      assert.equal((await credits.resolveCheckout(rejected, { action: 'reject' })).ok, true);
      assert.equal(await pay(rejected, 1000n), 'duplicate_session', 'a rejection is final');
      assert.deepEqual(await credits.checkouts('review', 10), []);
    });

    describe('refunds and disputes of a card payment take back its credits', () => {
      /** A session paid by card (`amountTotal` cents, by a PaymentIntent of its own) and credited `micro` to `keyId`. */
      async function paidSession(keyId: string, micro = 10_000_000n, amountTotal = 1000n) {
        const sessionId = newId('cs');
        const paymentIntent = newId('pi');
        await credits.recordCheckout({ sessionId, keyId, package: '10', credits: micro, amountTotal, currency: 'usd' });
        const event = { eventId: newId('evt'), type: 'checkout.session.completed', sessionId, amountTotal, currency: 'usd' };
        assert.equal(await credits.completeCheckout({ ...event, paymentIntent }), 'credited');
        return { sessionId, paymentIntent };
      }
      const now = () => Math.floor(Date.now() / 1000);
      /** `charge.refunded`: `amount` refunded in all of the charge's `of`, stated at `at` (s). */
      const refund = (paymentIntent: string, amount: bigint, of = 1000n, eventId = newId('evt'), at = now()) =>
        credits.reverseCheckout({ eventId, type: 'charge.refunded', paymentIntent, at, refunded: { amount, of } });
      /** A `charge.dispute.*` event stating dispute `id` of `amount` in `status` (closed: won, lost…; funds kept: won…). */
      const dispute = (paymentIntent: string, amount: bigint, status = 'needs_response', id = `du_${paymentIntent}`) => {
        const closed = ['won', 'lost', 'warning_closed', 'prevented'].includes(status);
        const state = { id, amount, closed, kept: closed && status !== 'lost' };
        const type = closed ? 'charge.dispute.closed' : 'charge.dispute.created';
        return credits.reverseCheckout({ eventId: newId('evt'), type, paymentIntent, at: now(), dispute: state });
      };
      /** A `charge.refund.updated` saying refund `refundId` of `amount`, made at `madeAt`, failed at `at`. */
      const refundFailed = (paymentIntent: string, refundId: string, amount: bigint, madeAt: number, at: number) =>
        credits.reverseCheckout({
          eventId: newId('evt'),
          type: 'charge.refund.updated',
          paymentIntent,
          at,
          refundFailed: { refundId, amount, madeAt },
        });
      const sessionOf = async (sessionId: string, state: 'credited' | 'review' | 'shortfall' = 'credited') =>
        (await credits.checkouts(state, 500)).find((c) => c.sessionId === sessionId);
      const adjustments = async (keyId: string) =>
        (await credits.history(keyId, { limit: 100 })).filter((e) => e.kind === 'adjustment').map((e) => e.amount);

      test('a full refund takes back every credit the key still holds, as an adjustment; restating it takes nothing more', async () => {
        const keyId = await key(5_000n);
        const { sessionId, paymentIntent } = await paidSession(keyId);
        assert.equal((await sessionOf(sessionId))?.paymentIntent, paymentIntent, 'the checkout event’s PaymentIntent is kept');
        assert.equal(await balanced(keyId), 10_005_000n);
        assert.equal(await refund(paymentIntent, 1000n), 'taken_back');
        assert.equal(await balanced(keyId), 5_000n, 'what the key had before the purchase stays');
        assert.deepEqual(await adjustments(keyId), [-10_000_000n]);
        assert.deepEqual((await sessionOf(sessionId))?.reversed, { refunded: 1000n, disputed: 0n, takenBack: 10_000_000n, shortfall: 0n });
        assert.equal(await refund(paymentIntent, 1000n), 'unchanged', 'a later event restating the refund');
        assert.equal(await balanced(keyId), 5_000n);
        assert.equal((await credits.key(keyId))?.status, 'active');
      });

      test('a partial refund takes back its share rounded down; a larger cumulative refund takes the difference, an older smaller one nothing', async () => {
        const keyId = await key(0n);
        const { paymentIntent } = await paidSession(keyId, 10_000_000n, 3n);
        assert.equal(await refund(paymentIntent, 1n, 3n), 'taken_back');
        assert.equal(await balanced(keyId), 6_666_667n, 'a third is 3 333 333.3: the buyer keeps the fraction');
        assert.equal(await refund(paymentIntent, 2n, 3n), 'taken_back');
        assert.equal(await balanced(keyId), 3_333_334n, 'two thirds in all, not two rounded thirds');
        assert.equal(await refund(paymentIntent, 1n, 3n), 'unchanged', 'delivered late, it restates less than was refunded');
        assert.equal(await balanced(keyId), 3_333_334n);
        assert.equal(await refund(paymentIntent, 3n, 3n), 'taken_back');
        assert.equal(await balanced(keyId), 0n, 'refunded in full: every credit, no more');
        assert.deepEqual(await adjustments(keyId), [-3_333_334n, -3_333_333n, -3_333_333n]);
      });

      test('a refund after the key spent the credits takes what the balance holds, suspends the key and records the shortfall for the admin', async () => {
        const keyId = await key(0n);
        const { sessionId, paymentIntent } = await paidSession(keyId);
        assert.ok((await debit(credits, { keyId, amount: 7_000_000n, reason: 'calls', idempotencyKey: newId('call') })).ok);
        assert.equal(await refund(paymentIntent, 1000n), 'shortfall');
        assert.equal(await balanced(keyId), 0n, 'never below zero');
        assert.equal((await credits.key(keyId))?.status, 'suspended');
        const short = await sessionOf(sessionId, 'shortfall');
        assert.deepEqual(short?.reversed, { refunded: 1000n, disputed: 0n, takenBack: 3_000_000n, shortfall: 7_000_000n });
        assert.equal(await refund(paymentIntent, 1000n), 'unchanged', 'the shortfall is the admin’s, not taken again');
        const refused = await debit(credits, { keyId, amount: 1n, reason: 'call', idempotencyKey: newId('call') });
        assert.equal(refused.ok ? 'debited' : refused.reason, 'key_suspended');
      });

      test('the same refund delivered twice at once, and restated by another event at once, on two instances takes back once', async () => {
        const open = backend.shared();
        const [one, two] = [await open(), await open()];
        try {
          const keyId = await newKey(one.credits, 0n);
          const sessionId = newId('cs');
          const paymentIntent = newId('pi');
          await one.credits.recordCheckout({ sessionId, keyId, package: '10', credits: 10_000_000n, amountTotal: 1000n, currency: 'usd' });
          const paid = { type: 'checkout.session.completed', sessionId, amountTotal: 1000n, currency: 'usd', paymentIntent };
          assert.equal(await one.credits.completeCheckout({ eventId: newId('evt'), ...paid }), 'credited');
          // One refund event and three later ones restating it (charge.refunded again, charge.refund.updated…), each delivered to both.
          const events = Array.from({ length: 4 }, () => newId('evt'));
          const on = (store: Store, eventId: string) =>
            store.credits.reverseCheckout({
              eventId,
              type: 'charge.refunded',
              paymentIntent,
              at: 1,
              refunded: { amount: 500n, of: 1000n },
            });
          const outcomes = await Promise.all(events.flatMap((eventId) => [on(one, eventId), on(two, eventId)]));
          assert.deepEqual(outcomes.sort(), [...Array(4).fill('duplicate_event'), 'taken_back', 'unchanged', 'unchanged', 'unchanged']);
          assert.equal(await assertBalanced(one.credits, keyId), 5_000_000n);
          const taken = (await one.credits.history(keyId, { limit: 10 })).filter((e) => e.kind === 'adjustment');
          assert.equal(taken.length, 1);
        } finally {
          await Promise.all([one.close(), two.close()]);
        }
      });

      test('a refund or dispute of a PaymentIntent no session or invoice has changes nothing and is recorded as unattributed', async () => {
        const keyId = await key(0n);
        await paidSession(keyId);
        const eventId = newId('evt');
        assert.equal(await refund('pi_of_nothing_known', 1000n, 1000n, eventId), 'unattributed');
        assert.equal(await refund('pi_of_nothing_known', 1000n, 1000n, eventId), 'duplicate_event', 'its redelivery is recognised');
        assert.equal(await dispute('pi_of_nothing_known', 1000n), 'unattributed');
        assert.equal(await balanced(keyId), 10_000_000n);
      });

      test('a dispute takes back the disputed share; closed won it gives it back, closed lost it stays taken', async () => {
        const keyId = await key(0n);
        const { sessionId, paymentIntent } = await paidSession(keyId);
        assert.equal(await dispute(paymentIntent, 400n), 'taken_back');
        assert.equal(await balanced(keyId), 6_000_000n);
        assert.equal(await dispute(paymentIntent, 400n, 'won'), 'given_back');
        assert.equal(await balanced(keyId), 10_000_000n);
        assert.deepEqual(await adjustments(keyId), [4_000_000n, -4_000_000n]);
        const other = await paidSession(keyId);
        assert.equal(await refund(other.paymentIntent, 300n), 'taken_back');
        assert.equal(await dispute(other.paymentIntent, 700n), 'taken_back', 'the rest of the charge, disputed');
        assert.equal(await dispute(other.paymentIntent, 700n, 'lost'), 'unchanged', 'lost: it stays taken');
        assert.equal(await balanced(keyId), 10_000_000n, 'all of the second session taken back, none of the first');
        assert.equal((await sessionOf(sessionId))?.reversed, undefined, 'the first session: nothing refunded, disputed or taken now');
      });

      test('a dispute’s created event delivered after its close with the funds kept takes nothing: a closed dispute is final', async () => {
        const keyId = await key(0n);
        const { sessionId, paymentIntent } = await paidSession(keyId);
        assert.equal(await dispute(paymentIntent, 1000n, 'won'), 'unchanged', 'closed won: nothing to take');
        assert.equal(await dispute(paymentIntent, 1000n), 'unchanged', 'its created event, redelivered late');
        assert.equal(await dispute(paymentIntent, 1000n, 'under_review'), 'unchanged', 'an update from before the close');
        assert.equal(await balanced(keyId), 10_000_000n);
        assert.deepEqual(await adjustments(keyId), []);
        assert.equal((await sessionOf(sessionId))?.reversed, undefined);
        const lost = await paidSession(keyId);
        assert.equal(await dispute(lost.paymentIntent, 1000n, 'lost'), 'taken_back');
        assert.equal(await dispute(lost.paymentIntent, 1000n), 'unchanged', 'lost stays lost');
        assert.equal(await balanced(keyId), 10_000_000n);
      });

      test('a refund and two disputes of one payment take back what their final states say, in every order of delivery', async () => {
        // 1000 charged: 300 refunded, dispute A of 400 lost, dispute B of 300 won: 700 of 1000 lost, 7 of 10 USD of credits.
        const events = [
          (pi: string) => refund(pi, 300n),
          (pi: string) => dispute(pi, 400n, 'needs_response', `du_a_${pi}`),
          (pi: string) => dispute(pi, 400n, 'lost', `du_a_${pi}`),
          (pi: string) => dispute(pi, 300n, 'needs_response', `du_b_${pi}`),
          (pi: string) => dispute(pi, 300n, 'won', `du_b_${pi}`),
        ];
        const orders = (items: number[]): number[][] =>
          items.length <= 1 ? [items] : items.flatMap((first) => orders(items.filter((i) => i !== first)).map((rest) => [first, ...rest]));
        let orders_ = 0;
        for (const order of orders([0, 1, 2, 3, 4])) {
          const keyId = await key(0n);
          // Half the credits spent first: what is taken comes partly from the balance, partly as shortfall.
          const { sessionId, paymentIntent } = await paidSession(keyId);
          assert.ok((await debit(credits, { keyId, amount: 5_000_000n, reason: 'calls', idempotencyKey: newId('call') })).ok);
          for (const i of order) await events[i]!(paymentIntent);
          const session = (await sessionOf(sessionId)) ?? (await sessionOf(sessionId, 'shortfall'));
          const { takenBack, shortfall, refunded, disputed } = session!.reversed!;
          const final = { refunded, disputed, taken: takenBack + shortfall, balance: await balanced(keyId) };
          assert.deepEqual(final, { refunded: 300n, disputed: 400n, taken: 7_000_000n, balance: 0n }, `in the order ${order.join(', ')}`);
          orders_ += 1;
        }
        assert.equal(orders_, 120);
      });

      test('a refund that fails gives back what it took, once, whichever of its events arrives first', async () => {
        const keyId = await key(0n);
        const { sessionId, paymentIntent } = await paidSession(keyId);
        const t = now() - 1000;
        assert.equal(await refund(paymentIntent, 400n, 1000n, newId('evt'), t), 'taken_back');
        assert.equal(await balanced(keyId), 6_000_000n);
        assert.equal(await refundFailed(paymentIntent, 're_1', 400n, t, t + 100), 'given_back');
        assert.equal(await balanced(keyId), 10_000_000n, 'the card refund failed: the buyer kept the money, the key the credits');
        assert.equal(await refundFailed(paymentIntent, 're_1', 400n, t, t + 100), 'unchanged', 'restated by another event');
        assert.equal(await refund(paymentIntent, 400n, 1000n, newId('evt'), t), 'unchanged', 'the refund’s own event, redelivered late');
        assert.equal(await refund(paymentIntent, 200n, 1000n, newId('evt'), t + 200), 'taken_back', 'a new refund after the failure');
        assert.equal(await balanced(keyId), 8_000_000n);
        assert.deepEqual((await sessionOf(sessionId))?.reversed, { refunded: 200n, disputed: 0n, takenBack: 2_000_000n, shortfall: 0n });

        const late = await paidSession(keyId);
        assert.equal(await refundFailed(late.paymentIntent, 're_2', 400n, t, t + 100), 'unchanged', 'the failure delivered first');
        assert.equal(await refund(late.paymentIntent, 400n, 1000n, newId('evt'), t), 'unchanged', 'then the refund it undid');
        assert.equal(await balanced(keyId), 18_000_000n);
      });

      test('a refund failure stated by several events counts from the earliest of them, whichever is delivered first', async () => {
        // Refund re_1 (400) made at t fails by t + 100; a refund.updated of it at t + 300 restates the failure. A new refund of
        // 200 at t + 200 is stated as 200 (re_1 failed before): 200 of 1000 stays refunded in both orders of delivery.
        const t = now() - 1000;
        for (const lateFirst of [false, true]) {
          const keyId = await key(0n);
          const { paymentIntent } = await paidSession(keyId);
          const refundId = newId('re');
          assert.equal(await refund(paymentIntent, 400n, 1000n, newId('evt'), t), 'taken_back');
          const failures = [t + 100, t + 300].map((at) => () => refundFailed(paymentIntent, refundId, 400n, t, at));
          for (const failed of lateFirst ? failures.reverse() : failures) await failed();
          await refund(paymentIntent, 200n, 1000n, newId('evt'), t + 200);
          assert.equal(await balanced(keyId), 8_000_000n, lateFirst ? 'the later failure event first' : 'in order');
        }
      });

      test('a subscription invoice’s revenue loses the refunded share once, when its booking and the refund meet on two instances at once', async () => {
        const open = backend.shared();
        const [one, two] = [await open(), await open()];
        try {
          const operatorId = newId('op');
          await one.operators.createOperator({
            id: operatorId,
            email: `${operatorId}@example.com`,
            name: 'Ada',
            keyHash: operatorId,
            createdAt: 1,
          });
          const invoices = Array.from({ length: 8 }, () => newId('in'));
          const book = async (invoiceId: string) => {
            const ref = `stripe:${invoiceId}`;
            const charge = {
              serverId: 'srv_subs',
              operatorId,
              rail: 'subscription',
              caller: 'key:k',
              tool: '(subscription)',
              ref,
            } as const;
            await one.operators.recordCharges(
              [{ ...charge, id: newId('ch'), amount: 10_000_000n, operatorShare: 9_000_000n, platformShare: 1_000_000n }].map((c) => ({
                ...c,
                custody: 'platform' as const,
                state: 'earned' as const,
                createdAt: Date.now(),
              })),
            );
            return one.credits.restateInvoice(invoiceId, []);
          };
          const refund = (invoiceId: string) =>
            two.credits.reverseCheckout({
              eventId: newId('evt'),
              type: 'charge.refunded',
              paymentIntent: `pi_${invoiceId}`,
              at: 1,
              refunded: { amount: 500n, of: 1000n },
              invoice: invoiceId,
            });
          const outcomes = await Promise.all(invoices.flatMap((invoiceId) => [book(invoiceId), refund(invoiceId)]));
          assert.equal(outcomes.filter((o) => o === 'taken_back').length, 8, outcomes.join(' '));
          assert.equal((await one.operators.balance(operatorId)).fiatEarned, 8n * 4_500_000n, 'half of each invoice, once');
          for (const invoiceId of invoices) assert.equal(await one.credits.restateInvoice(invoiceId, [`pi_${invoiceId}`]), 'unchanged');
        } finally {
          await Promise.all([one.close(), two.close()]);
        }
      });

      test('a refund that names no invoice, at once with the booking that links its payment to one, on two instances, takes back its share', async () => {
        const open = backend.shared();
        const [one, two] = [await open(), await open()];
        try {
          const operatorId = newId('op');
          await one.operators.createOperator({
            id: operatorId,
            email: `${operatorId}@example.com`,
            name: 'Ada',
            keyHash: operatorId,
            createdAt: 1,
          });
          const invoices = Array.from({ length: 16 }, () => newId('in'));
          const charge = { serverId: 'srv_subs', operatorId, rail: 'subscription', caller: 'key:k', tool: '(subscription)' } as const;
          await one.operators.recordCharges(
            invoices.map((invoiceId) => ({
              ...charge,
              id: newId('ch'),
              ref: `stripe:${invoiceId}`,
              amount: 10_000_000n,
              operatorShare: 9_000_000n,
              platformShare: 1_000_000n,
              custody: 'platform' as const,
              state: 'earned' as const,
              createdAt: Date.now(),
            })),
          );
          await Promise.all(
            invoices.flatMap((invoiceId) => [
              one.credits.restateInvoice(invoiceId, [`pi_${invoiceId}`]),
              two.credits.reverseCheckout({
                eventId: newId('evt'),
                type: 'charge.refunded',
                paymentIntent: `pi_${invoiceId}`,
                at: 1,
                refunded: { amount: 500n, of: 1000n },
              }),
            ]),
          );
          assert.equal((await one.operators.balance(operatorId)).fiatEarned, 16n * 4_500_000n, 'half of each invoice, once');
        } finally {
          await Promise.all([one.close(), two.close()]);
        }
      });

      test('a subscription invoice paid by two payments loses, for one of them refunded in full, that payment’s share of its revenue only', async () => {
        const operatorId = newId('op');
        await store.operators.createOperator({
          id: operatorId,
          email: `${operatorId}@example.com`,
          name: 'Ada',
          keyHash: operatorId,
          createdAt: 1,
        });
        const invoiceId = newId('in');
        const charge = { serverId: 'srv_subs', operatorId, rail: 'subscription', caller: 'key:k', tool: '(subscription)' } as const;
        await store.operators.recordCharges([
          {
            ...charge,
            id: newId('ch'),
            ref: `stripe:${invoiceId}`,
            amount: 10_000_000n,
            operatorShare: 9_000_000n,
            platformShare: 1_000_000n,
            custody: 'platform',
            state: 'earned',
            createdAt: Date.now(),
          },
        ]);
        const [first, second] = [newId('pi'), newId('pi')];
        assert.equal(await credits.restateInvoice(invoiceId, [first, second]), 'unchanged', '10 USD paid as 6 and 4');
        const refunded = { eventId: newId('evt'), type: 'charge.refunded', paymentIntent: second, at: now(), invoice: invoiceId };
        assert.equal(await credits.reverseCheckout({ ...refunded, refunded: { amount: 400n, of: 400n } }), 'taken_back');
        assert.equal((await store.operators.balance(operatorId)).fiatEarned, 5_400_000n, '6 of 10 USD stay: 90 % of them');
      });

      test('a refund delivered at once with its checkout event, on two instances, is taken back once', async () => {
        const open = backend.shared();
        const [one, two] = [await open(), await open()];
        try {
          const sessions = await Promise.all(
            Array.from({ length: 16 }, async () => {
              const keyId = await newKey(one.credits, 0n);
              const sessionId = newId('cs');
              await one.credits.recordCheckout({
                sessionId,
                keyId,
                package: '10',
                credits: 10_000_000n,
                amountTotal: 1000n,
                currency: 'usd',
              });
              return { keyId, sessionId, paymentIntent: newId('pi') };
            }),
          );
          await Promise.all(
            sessions.flatMap(({ sessionId, paymentIntent }) => [
              one.credits.completeCheckout({
                eventId: newId('evt'),
                type: 'checkout.session.completed',
                sessionId,
                amountTotal: 1000n,
                currency: 'usd',
                paymentIntent,
              }),
              two.credits.reverseCheckout({
                eventId: newId('evt'),
                type: 'charge.refunded',
                paymentIntent,
                at: 1,
                refunded: { amount: 250n, of: 1000n },
              }),
            ]),
          );
          const balances = await Promise.all(sessions.map(({ keyId }) => assertBalanced(one.credits, keyId)));
          assert.deepEqual(balances, Array(16).fill(7_500_000n), 'a quarter refunded: a quarter taken back, whichever came first');
        } finally {
          await Promise.all([one.close(), two.close()]);
        }
      });

      test('a refund delivered before its checkout event is recorded as unattributed, and taken back when the session is credited', async () => {
        const keyId = await key(0n);
        const sessionId = newId('cs');
        const paymentIntent = newId('pi');
        await credits.recordCheckout({ sessionId, keyId, package: '10', credits: 10_000_000n, amountTotal: 1000n, currency: 'usd' });
        assert.equal(await refund(paymentIntent, 250n), 'unattributed', 'no session has its PaymentIntent yet');
        const paid = { type: 'checkout.session.completed', sessionId, amountTotal: 1000n, currency: 'usd', paymentIntent };
        assert.equal(await credits.completeCheckout({ eventId: newId('evt'), ...paid }), 'credited');
        assert.equal(await balanced(keyId), 7_500_000n);
        assert.equal(await refund(paymentIntent, 250n), 'unchanged');
      });

      test('a refund of a session held for review is kept; crediting it later takes the refunded share back at once', async () => {
        const keyId = await key(0n);
        const sessionId = newId('cs');
        const paymentIntent = newId('pi');
        await credits.recordCheckout({ sessionId, keyId, package: '10', credits: 10_000_000n, amountTotal: 1000n, currency: 'usd' });
        const short = { type: 'checkout.session.completed', sessionId, amountTotal: 800n, currency: 'usd', paymentIntent };
        assert.equal(await credits.completeCheckout({ eventId: newId('evt'), ...short }), 'held_for_review');
        assert.equal(await refund(paymentIntent, 400n, 800n), 'not_credited');
        assert.equal(await balanced(keyId), 0n);
        const resolved = await credits.resolveCheckout(sessionId, { action: 'credit' });
        assert.ok(resolved.ok);
        assert.equal(await balanced(keyId), 5_000_000n, 'half of what was paid (800) was refunded: half the credits');
        assert.deepEqual(await adjustments(keyId), [-5_000_000n]);
      });
    });
  });

/** A store of an earlier build (migrated to `version`) holding `rows`, opened by this build. */
async function upgradedFrom(backend: 'sqlite' | 'postgres', version: number, rows: string): Promise<SqliteStore | PostgresStore> {
  const earlier = migrations.filter((m) => m.version <= version);
  if (backend === 'sqlite') {
    const dir = mkdtempSync(path.join(os.tmpdir(), `turnpike-v${version}-`));
    after(() => rmSync(dir, { recursive: true, force: true }));
    // Raw: this build's store prepares statements for the newer schema.
    const old = new Database(path.join(dir, 'store.db'));
    migrateSqlite(old, earlier);
    old.exec(rows);
    old.close();
    return openSqliteStore({ path: path.join(dir, 'store.db') });
  }
  const schema = freshSchema();
  const old = await openPostgresStore({ url: POSTGRES_URL, schema, migrations: earlier, max: 1 });
  await old.pool.query(rows);
  await old.close();
  return openPostgresStore({ url: POSTGRES_URL, schema, max: 3 });
}

/** A store whose call was still under way (its debit open) when a build before lean open debits stopped, opened by this build. */
const withOpenDebitOfV19 = (backend: 'sqlite' | 'postgres') =>
  upgradedFrom(
    backend,
    19,
    `
    INSERT INTO api_keys (id, hash, name, balance, created_at, updated_at) VALUES ('key_old', 'h_old', 'old', 900, 1, 1);
    INSERT INTO ledger (id, key_id, kind, amount, balance_after, reason, idempotency_key, created_at)
      VALUES ('le_old', 'key_old', 'debit', -100, 900, 'tools/call t', 'call_old', 1000);
    INSERT INTO open_debits (debit_id, created_at) VALUES ('le_old', 1000);`,
  );

for (const backend of backends)
  test(`a debit left open by an earlier build stays open through the upgrade, and its sweep refunds it once (${backend.name})`, {
    skip: backend.skip,
  }, async () => {
    const store = await withOpenDebitOfV19(backend.name);
    try {
      assert.deepEqual(await store.credits.openDebits(999), [], 'made at 1000');
      assert.deepEqual(await store.credits.openDebits(Date.now()), ['le_old']);
      assert.deepEqual(await store.credits.refund('le_old', 'cut off'), { balance: 1000n });
      assert.deepEqual(await store.credits.refund('le_old', 'cut off'), { balance: 1000n }, 'once');
      assert.deepEqual(await store.credits.openDebits(Date.now()), []);
    } finally {
      await store.close();
    }
  });

/** A store with a session credited (and one held for review) by a build before refunds were taken back, opened by this build. */
const withCheckoutsOfV22 = (backend: 'sqlite' | 'postgres') =>
  upgradedFrom(
    backend,
    22,
    `
    INSERT INTO api_keys (id, hash, name, balance, created_at, updated_at) VALUES ('key_buyer', 'h_buyer', 'buyer', 10000000, 1, 1);
    INSERT INTO checkout_sessions (session_id, key_id, package, credits, amount_total, currency, state, created_at, updated_at)
      VALUES ('cs_old', 'key_buyer', '10', 10000000, 1000, 'usd', 'credited', 1, 2);
    INSERT INTO checkout_sessions (session_id, key_id, package, credits, amount_total, currency, state, review_reason, paid_amount,
                                   paid_currency, created_at, updated_at)
      VALUES ('cs_held', 'key_buyer', '10', 10000000, 1000, 'usd', 'review', 'amount_mismatch', 999, 'usd', 1, 3);
    INSERT INTO ledger (id, key_id, kind, amount, balance_after, reason, idempotency_key, created_at)
      VALUES ('le_old', 'key_buyer', 'topup', 10000000, 10000000, 'Stripe Checkout, package 10', 'stripe:cs_old', 2);`,
  );

/** A store with a session whose payment was refunded (300 of 1000) and disputed (200, open) by a build before disputes were kept by id. */
const withReversalOfV24 = (backend: 'sqlite' | 'postgres') =>
  upgradedFrom(
    backend,
    24,
    `
    INSERT INTO api_keys (id, hash, name, balance, created_at, updated_at) VALUES ('key_buyer', 'h_buyer', 'buyer', 5000000, 1, 1);
    INSERT INTO checkout_sessions (session_id, key_id, package, credits, amount_total, currency, state, created_at, updated_at,
                                   payment_intent, charged, refunded, disputed, taken_back, shortfall)
      VALUES ('cs_rev', 'key_buyer', '10', 10000000, 1000, 'usd', 'credited', 1, 1700000000000, 'pi_rev', 1000, 300, 200, 5000000, 0);
    INSERT INTO ledger (id, key_id, kind, amount, balance_after, reason, idempotency_key, created_at)
      VALUES ('le_top', 'key_buyer', 'topup', 10000000, 10000000, 'Stripe Checkout, package 10', 'stripe:cs_rev', 2);
    INSERT INTO ledger (id, key_id, kind, amount, balance_after, reason, idempotency_key, created_at)
      VALUES ('le_rev', 'key_buyer', 'adjustment', -5000000, 5000000, 'Stripe refund or dispute', 'stripe-reversal:evt_old', 3);`,
  );

for (const backend of backends)
  test(`a refund and dispute taken back by an earlier build stay taken through the upgrade; the dispute won later gives its share back (${backend.name})`, {
    skip: backend.skip,
  }, async () => {
    const store = await withReversalOfV24(backend.name);
    try {
      const event = { type: 'charge.refunded', paymentIntent: 'pi_rev', at: 1_700_000_000 };
      const restated = { ...event, eventId: newId('evt'), refunded: { amount: 300n, of: 1000n } };
      assert.equal(await store.credits.reverseCheckout(restated), 'unchanged', 'the refund, restated');
      const later = { ...event, eventId: newId('evt'), at: 1_700_000_100, refunded: { amount: 400n, of: 1000n } };
      assert.equal(await store.credits.reverseCheckout(later), 'taken_back', 'a larger refund takes its difference only');
      assert.equal((await store.credits.key('key_buyer'))?.balance, 4_000_000n);
      const won = { id: 'du_rev', amount: 200n, closed: true, kept: true };
      const closed = { type: 'charge.dispute.closed', paymentIntent: 'pi_rev', at: 1_700_000_200, eventId: newId('evt'), dispute: won };
      assert.equal(await store.credits.reverseCheckout(closed), 'given_back');
      assert.equal((await store.credits.key('key_buyer'))?.balance, 6_000_000n, 'what the refund of 400 leaves');
    } finally {
      await store.close();
    }
  });

/** A store with a session whose payment's dispute (200 of 1000) was taken back and, closed won, given back by a build before the dispute facts (migration `version`) knew closed disputes. */
const withDisputeWonOf = (backend: 'sqlite' | 'postgres', version: number) =>
  upgradedFrom(
    backend,
    version,
    `
    INSERT INTO api_keys (id, hash, name, balance, created_at, updated_at) VALUES ('key_won', 'h_won', 'won', 10000000, 1, 1);
    INSERT INTO checkout_sessions (session_id, key_id, package, credits, amount_total, currency, state, created_at, updated_at,
                                   payment_intent, charged, refunded, disputed, taken_back, shortfall)
      VALUES ('cs_won', 'key_won', '10', 10000000, 1000, 'usd', 'credited', 1, 1700000000000, 'pi_won', 1000, 0, 0, 0, 0);
    INSERT INTO ledger (id, key_id, kind, amount, balance_after, reason, idempotency_key, created_at)
      VALUES ('le_top', 'key_won', 'topup', 10000000, 10000000, 'Stripe Checkout, package 10', 'stripe:cs_won', 2);
    INSERT INTO ledger (id, key_id, kind, amount, balance_after, reason, idempotency_key, created_at)
      VALUES ('le_take', 'key_won', 'adjustment', -2000000, 8000000, 'Stripe refund or dispute', 'stripe-reversal:evt_du_open', 3);
    INSERT INTO ledger (id, key_id, kind, amount, balance_after, reason, idempotency_key, created_at)
      VALUES ('le_give', 'key_won', 'adjustment', 2000000, 10000000, 'Stripe dispute closed, funds kept', 'stripe-reversal:evt_du_won', 4);
    INSERT INTO stripe_events (event_id, type, session_id, outcome, received_at)
      VALUES ('evt_du_open', 'charge.dispute.created', 'cs_won', 'taken_back', 3);
    INSERT INTO stripe_events (event_id, type, session_id, outcome, received_at)
      VALUES ('evt_du_won', 'charge.dispute.closed', 'cs_won', 'given_back', 1700000000000);`,
  );

for (const backend of backends)
  for (const version of [24, 25])
    test(`a dispute closed by an earlier build (${version}) stays closed through the upgrade: an update of it from before its close, delivered late, takes nothing; a dispute opened after counts (${backend.name})`, {
      skip: backend.skip,
    }, async () => {
      const store = await withDisputeWonOf(backend.name, version);
      try {
        const open = { id: 'du_won', amount: 200n, closed: false, kept: false };
        const late = { type: 'charge.dispute.updated', paymentIntent: 'pi_won', at: 1_699_999_000, eventId: newId('evt'), dispute: open };
        assert.equal(await store.credits.reverseCheckout(late), 'unchanged');
        assert.equal((await store.credits.key('key_won'))?.balance, 10_000_000n, 'won: the buyer keeps the credits');
        const chargeback = { ...late, eventId: newId('evt'), at: 1_700_000_100, dispute: { ...open, id: 'du_chargeback' } };
        assert.equal(await store.credits.reverseCheckout(chargeback), 'taken_back', 'a dispute opened after the close counts on its own');
        assert.equal((await store.credits.key('key_won'))?.balance, 8_000_000n);
      } finally {
        await store.close();
      }
    });

for (const backend of backends)
  test(`checkout sessions of an earlier build keep their state through the upgrade; the database refuses taking back more than a session credited (${backend.name})`, {
    skip: backend.skip,
  }, async () => {
    const store = await withCheckoutsOfV22(backend.name);
    try {
      const [credited] = await store.credits.checkouts('credited', 10);
      assert.deepEqual(
        [credited?.sessionId, credited?.credits, credited?.paymentIntent, credited?.reversed],
        ['cs_old', 10_000_000n, undefined, undefined],
      );
      const [held] = await store.credits.checkouts('review', 10);
      assert.deepEqual(
        [held?.sessionId, held?.reviewReason, held?.paid],
        ['cs_held', 'amount_mismatch', { amount: 999n, currency: 'usd' }],
      );
      const refund = {
        eventId: newId('evt'),
        type: 'charge.refunded',
        paymentIntent: 'pi_unrecorded',
        at: 1,
        refunded: { amount: 1000n, of: 1000n },
      };
      assert.equal(await store.credits.reverseCheckout(refund), 'unattributed', 'its PaymentIntent was never recorded');
      assert.equal((await store.credits.key('key_buyer'))?.balance, 10_000_000n);
      const tooMuch = `UPDATE checkout_sessions SET taken_back = 6000000, shortfall = 4000001 WHERE session_id = 'cs_old'`;
      if (store.kind === 'postgres') await assert.rejects(store.pool.query(tooMuch), /check constraint/);
      else store.immediate((db) => assert.throws(() => db.exec(tooMuch), /CHECK constraint failed/));
    } finally {
      await store.close();
    }
  });

test('keeping a request’s answer waits for no WAL sync of its own: the close of its debit, written after it, makes it durable (sqlite)', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-answer-'));
  const store = await openSqliteStore({ path: path.join(dir, 'store.db') });
  const original = fs.fdatasync;
  try {
    const keyId = await newKey(store.credits, 1_000n);
    const request = { idempotencyKey: 'idem-1', bodyHash: 'h1' };
    const debited = await debit(store.credits, { keyId, amount: 10n, reason: 'call', idempotencyKey: newId('call'), request, open: true });
    assert.ok(debited.ok);
    let syncs = 0;
    fs.fdatasync = ((fd: number, done: (error: null) => void) => {
      syncs++;
      original(fd, () => done(null));
    }) as typeof fs.fdatasync;
    syncBuiltinESMExports();
    await store.credits.completeRequest(keyId, request.idempotencyKey, '{"done":true}');
    assert.equal(syncs, 0, 'no sync was asked for');
    assert.equal((await store.credits.request(keyId, request.idempotencyKey))!.response, '{"done":true}');
  } finally {
    fs.fdatasync = original;
    syncBuiltinESMExports();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
