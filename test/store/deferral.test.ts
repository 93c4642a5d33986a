import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Address, Hex } from 'viem';
import type { NewPayment } from '../../src/store/journal/journal.js';
import type { Store } from '../../src/store/store.js';
import { backends } from '../helpers/stores.js';

let n = 0;
const payment = (payer: string, amount: bigint, nonce?: string, asset = '0x833589fcd6edb6e08f4c7c32d4f71b54bda02913'): NewPayment => ({
  chainId: 8453,
  asset: asset as Address,
  payer: `0x${payer.padStart(40, '0')}` as Address,
  nonce: `0x${(nonce ?? (++n).toString(16)).padStart(64, '0')}` as Hex,
  payTo: '0x00000000000000000000000000000000000000bb' as Address,
  amount,
  validAfter: 0n,
  validBefore: 2_000_000_000n,
  signature: '0x1234',
  network: 'eip155:8453',
  purpose: `call:main:${n}`,
});
const BIG = 10n ** 18n;

for (const backend of backends) {
  describe(`deferral bounds across two instances on one database (${backend.name})`, { skip: backend.skip }, () => {
    let stores: Store[];
    before(async () => {
      const open = backend.shared();
      stores = [await open(), await open()];
    });
    after(() => Promise.all(stores.map((s) => s.close())));

    test('concurrent claims of one payer with payments of different amounts, split over two instances: what is deferred stays within the per-payer cap and the balance, and what is claimed within the balance', async () => {
      const amounts = [1n, 2n, 3n, 4n, 5n, 6n, 7n, 1n, 2n, 3n, 4n, 5n, 6n, 7n].map((a) => a * 1000n);
      for (const [cap, balance] of [
        [10_000n, BIG],
        [BIG, 12_000n],
      ] as const) {
        const payer = (++n).toString(16);
        const payments = amounts.map((a) => payment(payer, a));
        const claims = await Promise.all(
          payments.map((p, i) => stores[i % 2]!.journal.claimCovered(p, balance, { balance, cap, total: BIG })),
        );
        const deferred = payments.filter((_, i) => (claims[i] as { deferred?: boolean }).deferred).reduce((s, p) => s + p.amount, 0n);
        const claimed = payments.filter((_, i) => claims[i]!.claimed).reduce((s, p) => s + p.amount, 0n);
        assert.ok(deferred > 0n);
        assert.ok(deferred <= cap, `deferred ${deferred} within the cap ${cap}`);
        assert.ok(claimed <= balance, `claimed ${claimed} within the balance ${balance}`);
      }
    });

    test('concurrent claims of twelve payers split over two instances, with a bound of two payments for all of them: two are deferred, never more', async () => {
      for (let round = 0; round < 3; round++) {
        // A token of its own each round: nothing else at risk on it.
        const asset = `0x${(0xe0 + round).toString(16).padStart(40, '0')}`;
        const claims = await Promise.all(
          Array.from({ length: 12 }, (_, i) =>
            stores[i % 2]!.journal.claim(payment((++n).toString(16), 1_000n, undefined, asset), { balance: BIG, cap: BIG, total: 2_000n }),
          ),
        );
        assert.equal(claims.filter((c) => (c as { deferred?: boolean }).deferred).length, 2);
      }
    });

    test('payers who all sign the same nonce share the instance-wide bound: the one judged after it is full is claimed strict', async () => {
      const fresh = [(++n).toString(16), (++n).toString(16), (++n).toString(16)];
      const shared = (++n).toString(16);
      const total = 2_000n;
      const outcomes = [];
      for (const [i, payer] of fresh.entries()) {
        // A token of its own: nothing else at risk on it.
        const p = payment(payer, 1_000n, shared, '0x00000000000000000000000000000000000000dd');
        outcomes.push(await stores[i % 2]!.journal.claim(p, { balance: BIG, cap: BIG, total }));
      }
      assert.deepEqual(
        outcomes.map((o) => (o as { deferred?: boolean }).deferred),
        [true, true, false],
      );
    });
  });
}
