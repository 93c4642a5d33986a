import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import { generateApiKey } from '../../src/rails/credits/api-keys.js';
import type { CreditStore, LedgerEntry } from '../../src/store/credits/credits.js';
import { openSqliteStore } from '../../src/store/sqlite.js';

/**
 * Money invariants of the credits ledger under random sequences of operations on 2–3 keys: each
 * balance is the sum of its entries and each entry's balanceAfter the running sum, nothing goes
 * below zero, an idempotency key is applied once, a debit refunded once. Run one after another
 * the ledger must also agree with a model of the balances; run in concurrent batches, with the
 * invariants and with what each call reported.
 */

const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-ledger-property-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;

/** Few idempotency keys, so that repeats (sequential and concurrent twins) are common. */
const idem = fc.constantFrom('i0', 'i1', 'i2', 'i3', 'i4', 'i5', 'i6', 'i7');
const amount = fc.oneof(fc.bigInt({ min: 1n, max: 1_000n }), fc.bigInt({ min: 1n, max: 10n ** 15n }));
const who = fc.nat(2);

type Op =
  | { kind: 'topup'; key: number; amount: bigint; idem: string }
  | { kind: 'debit'; key: number; amount: bigint; idem: string }
  | { kind: 'refund'; debit: number }
  | { kind: 'adjust'; key: number; amount: bigint; idem: string }
  | { kind: 'transfer'; from: number; to: number; amount: bigint; idem: string };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('topup' as const), key: who, amount, idem }),
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('debit' as const), key: who, amount, idem }) },
  fc.record({ kind: fc.constant('refund' as const), debit: fc.nat() }),
  fc.record({
    kind: fc.constant('adjust' as const),
    key: who,
    amount: fc.tuple(amount, fc.boolean()).map(([a, neg]) => (neg ? -a : a)),
    idem,
  }),
  fc.record({ kind: fc.constant('transfer' as const), from: who, to: who, amount, idem }),
);

/** A run: 2 or 3 keys, up to 30 operations in batches (a batch of 1 is sequential). */
const scenario = fc.record({
  keys: fc.integer({ min: 2, max: 3 }),
  concurrent: fc.boolean(),
  batches: fc.array(fc.array(op, { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 10 }).filter((b) => b.flat().length <= 30),
});

/** The outcome of one operation, as the ledger reported it. */
type Outcome = { applied: boolean; debitId?: string; refused?: string; threw?: string };

function runner(credits: CreditStore, keyIds: string[], debits: string[]) {
  return async (o: Op): Promise<Outcome> => {
    try {
      switch (o.kind) {
        case 'topup': {
          const r = await credits.credit({
            keyId: keyIds[o.key % keyIds.length]!,
            kind: 'topup',
            amount: o.amount,
            reason: 'topup',
            idempotencyKey: o.idem,
          });
          return { applied: r.applied };
        }
        case 'debit': {
          const r = await credits.debit({
            keyId: keyIds[o.key % keyIds.length]!,
            amount: o.amount,
            reason: 'call',
            idempotencyKey: o.idem,
          });
          return r.ok ? { applied: true, debitId: r.entry.id } : { applied: false, refused: r.reason };
        }
        case 'refund': {
          if (debits.length === 0) return { applied: false };
          await credits.refund(debits[o.debit % debits.length]!, 'failed call');
          return { applied: true };
        }
        case 'adjust': {
          const keyId = keyIds[o.key % keyIds.length]!;
          const side = o.amount < 0n ? { from: keyId } : { to: keyId };
          const r = await credits.move({ ...side, amount: o.amount < 0n ? -o.amount : o.amount, reason: 'adjust', idempotencyKey: o.idem });
          return r.ok ? { applied: r.applied } : { applied: false, refused: r.reason };
        }
        case 'transfer': {
          const from = keyIds[o.from % keyIds.length]!;
          const to = keyIds[o.to % keyIds.length]!;
          if (from === to) return { applied: false };
          const r = await credits.move({ from, to, amount: o.amount, reason: 'transfer', idempotencyKey: o.idem });
          return r.ok ? { applied: r.applied } : { applied: false, refused: r.reason };
        }
      }
    } catch (error) {
      return { applied: false, threw: (error as Error).message };
    }
  };
}

/**
 * What the ledger must have done, one operation at a time: a used idempotency key changes
 * nothing, nothing takes a balance below zero, a refund returns a debit once. (A debit's
 * idempotency key is checked after its balance: a repeat that is covered is an error.)
 */
function model(keys: number) {
  const balances = Array.from({ length: keys }, () => 0n);
  const used = new Set<string>();
  const debits: { key: number; amount: bigint; refunded: boolean }[] = [];
  return {
    balances,
    expect(o: Op): Pick<Outcome, 'applied' | 'refused'> & { throws?: true } {
      switch (o.kind) {
        case 'topup': {
          if (used.has(o.idem)) return { applied: false };
          used.add(o.idem);
          balances[o.key % keys]! += o.amount;
          return { applied: true };
        }
        case 'debit': {
          const k = o.key % keys;
          if (balances[k]! < o.amount) return { applied: false, refused: 'insufficient_balance' };
          if (used.has(o.idem)) return { applied: false, throws: true };
          used.add(o.idem);
          balances[k]! -= o.amount;
          debits.push({ key: k, amount: o.amount, refunded: false });
          return { applied: true };
        }
        case 'refund': {
          if (debits.length === 0) return { applied: false };
          const d = debits[o.debit % debits.length]!;
          if (!d.refunded) balances[d.key]! += d.amount;
          d.refunded = true;
          return { applied: true };
        }
        case 'adjust': {
          const k = o.key % keys;
          if (used.has(o.idem)) return { applied: false };
          if (balances[k]! + o.amount < 0n) return { applied: false, refused: 'insufficient_balance' };
          used.add(o.idem);
          balances[k]! += o.amount;
          return { applied: true };
        }
        case 'transfer': {
          const [from, to] = [o.from % keys, o.to % keys];
          if (from === to) return { applied: false };
          if (used.has(`${o.idem}:out`)) return { applied: false };
          if (balances[from]! < o.amount) return { applied: false, refused: 'insufficient_balance' };
          used.add(`${o.idem}:out`);
          balances[from]! -= o.amount;
          balances[to]! += o.amount;
          return { applied: true };
        }
      }
    },
  };
}

/** The invariants every state of the ledger keeps, whatever ran. */
async function assertInvariants(credits: CreditStore, keyIds: string[]) {
  const all: LedgerEntry[] = [];
  for (const keyId of keyIds) {
    const entries = (await credits.history(keyId, { limit: 10_000 })).reverse();
    let running = 0n;
    for (const entry of entries) {
      running += entry.amount;
      assert.equal(entry.balanceAfter, running, `entry ${entry.id} (${entry.kind}) of ${keyId}: balanceAfter is not the running sum`);
      assert.ok(running >= 0n, `${keyId} went below zero at ${entry.id}`);
      assert.ok(
        entry.kind === 'debit'
          ? entry.amount < 0n
          : entry.kind === 'refund' || entry.kind === 'topup'
            ? entry.amount > 0n
            : entry.amount !== 0n,
      );
    }
    assert.equal((await credits.key(keyId))!.balance, running, `${keyId}: balance is not the sum of its entries`);
    all.push(...entries);
  }
  const idems = all.map((e) => e.idempotencyKey);
  assert.equal(new Set(idems).size, idems.length, `an idempotency key was applied twice: ${idems.sort()}`);
  const refunds = all.filter((e) => e.kind === 'refund').map((e) => (e.ref as { debit: string }).debit);
  assert.equal(new Set(refunds).size, refunds.length, 'a debit was refunded twice');
  for (const debitId of refunds) {
    const debit = all.find((e) => e.id === debitId);
    assert.ok(debit?.kind === 'debit', `refund of ${debitId}, which is no debit`);
    assert.equal(all.find((e) => e.ref && (e.ref as { debit?: string }).debit === debitId)!.amount, -debit.amount);
  }
  // Transfers come in pairs: what left one key arrived at another.
  const transfers = all.filter((e) => e.kind === 'transfer');
  assert.equal(
    transfers.reduce((s, e) => s + e.amount, 0n),
    0n,
  );
}

describe('credits ledger money invariants (property, SQLite)', () => {
  test('random topups, debits, refunds, adjustments and transfers keep every balance the sum of its entries, never negative, each idempotency key once', async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async ({ keys, concurrent, batches }) => {
        const store = await openSqliteStore({ path: path.join(dir, `ledger-${++files}.db`) });
        try {
          const { credits } = store;
          const keyIds: string[] = [];
          for (let i = 0; i < keys; i++) {
            const { id, hash } = generateApiKey();
            const created = await credits.createKey({ id, hash, name: `k${i}` });
            assert.ok(created.created);
            keyIds.push(id);
          }
          const debits: string[] = [];
          const run = runner(credits, keyIds, debits);
          const expected = model(keys);
          for (const batch of concurrent ? batches : batches.flat().map((o) => [o])) {
            const outcomes = await Promise.all(batch.map(run));
            debits.push(...outcomes.flatMap((o) => (o.debitId ? [o.debitId] : [])));
            if (!concurrent) {
              const want = expected.expect(batch[0]!);
              const got = outcomes[0]!;
              assert.equal(
                got.applied,
                want.applied,
                `${JSON.stringify(batch[0], (_, v) => (typeof v === 'bigint' ? `${v}n` : v))}: ${JSON.stringify(got)}`,
              );
              assert.equal(got.refused, want.refused);
              assert.equal(got.threw !== undefined, want.throws === true, got.threw);
              for (const [i, keyId] of keyIds.entries()) assert.equal((await credits.key(keyId))!.balance, expected.balances[i]);
            } else {
              // Twins in one batch: an idempotency key is reported applied at most once.
              const ledgerIdem = (o: Op) => (o.kind === 'transfer' ? [`${o.idem}:out`] : 'idem' in o ? [o.idem] : []);
              const appliedIdems = batch.flatMap((o, i) => (outcomes[i]!.applied ? ledgerIdem(o) : []));
              assert.equal(new Set(appliedIdems).size, appliedIdems.length, `applied twice: ${appliedIdems}`);
              assert.ok(
                outcomes.every((o) => o.threw === undefined || /UNIQUE/.test(o.threw)),
                outcomes.map((o) => o.threw).join(),
              );
            }
            await assertInvariants(credits, keyIds);
          }
        } finally {
          await store.close();
        }
      }),
      { numRuns: 50 },
    );
  });
});
