import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Hex } from 'viem';
import { purposes } from '../../src/facilitator/purposes.js';
import type { PaymentKey } from '../../src/store/journal/journal.js';
import { useSandbox } from '../helpers/chain.js';
import { facilitatorApi } from '../helpers/facilitator-api.js';
import { keyOf, v2Request } from '../helpers/payments.js';

const chain = useSandbox();

describe('a payer whose balance covers their payments exactly', () => {
  test('a payment judged while another of the payer’s is mined but its row not final yet is claimed: the mined one is not counted twice (in the balance read and as in flight)', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let slow: PaymentKey | undefined;
    // The first payment's row stays `submitted` after its block (as for the few ms before its receipt is seen).
    const { facilitator, store } = await facilitatorApi(chain, {
      maxDeferredPerPayer: 10n ** 18n,
      maxDeferredTotal: 10n ** 18n,
      journalFor: (journal) => ({
        ...journal,
        finish: async (key, outcome) => {
          if (key.nonce === slow?.nonce) await gate;
          return journal.finish(key, outcome);
        },
      }),
    });
    const payer = chain.sandbox.accounts.payers[4]!;
    const payTo = chain.sandbox.accounts.payees[1]!.address;
    const balance = await chain.balanceOf(payer.address);
    const first = await v2Request({ payer, payTo, amount: balance / 2n });
    const second = await v2Request({ payer, payTo, amount: balance - balance / 2n });
    slow = keyOf(first);
    const one = await facilitator.settle(first, purposes.call('s', '1'), { deferred: true });
    assert.equal(one.errorReason, 'settlement_pending');
    await chain.client.waitForTransactionReceipt({ hash: one.transaction as Hex, pollingInterval: 5 });
    assert.equal((await store.journal.get(slow))?.state, 'submitted', 'mined, its row not final yet');

    const two = await facilitator.settle(second, purposes.call('s', '2'), { deferred: true });
    release();
    await facilitator.drain();
    assert.ok(two.success || two.errorReason === 'settlement_pending', JSON.stringify(two));
    assert.equal((await store.journal.get(keyOf(second)))?.state, 'settled');
    assert.equal(await chain.balanceOf(payer.address), 0n);
  });
});
