import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { Address, Hex } from 'viem';
import type { NewPayment } from '../../src/store/journal.js';
import { type Store, StoreError } from '../../src/store/store.js';
import { backends } from '../helpers/stores.js';

const payment = (nonce: string): NewPayment => ({
  chainId: 8453,
  asset: '0x833589fcd6edb6e08f4c7c32d4f71b54bda02913' as Address,
  payer: '0x00000000000000000000000000000000000000aa' as Address,
  nonce: `0x${nonce.padStart(64, '0')}` as Hex,
  payTo: '0x00000000000000000000000000000000000000bb' as Address,
  amount: 10_000n,
  validAfter: 0n,
  validBefore: 2_000_000_000n,
  signature: '0x1234',
  network: 'eip155:8453',
});
const tx = { txHash: `0x${'ab'.repeat(32)}` as Hex, rawTx: '0x02f8' as Hex, relayer: '0x00000000000000000000000000000000000000cc' as Address, relayerNonce: 7 };

for (const backend of backends)
describe(`payments journal (${backend.name})`, { skip: backend.skip }, () => {
  const open: { close(): Promise<void> }[] = [];
  const opened = async (): Promise<Store> => {
    const store = await backend.open();
    open.push(store);
    return store;
  };
  after(() => Promise.all(open.map((s) => s.close())));

  test('exactly one of many claims wins; the rest see the record', async () => {
    const store = await opened();
    const claims = await Promise.all(Array.from({ length: 20 }, () => store.journal.claim(payment('1'))));
    assert.equal(claims.filter((c) => c.claimed).length, 1);
    for (const c of claims) if (!c.claimed) assert.equal(c.record.state, 'submitting');
  });

  test('transitions only from the states the machine allows', async () => {
    const store = await opened();
    const p = payment('2');
    await assert.rejects(store.journal.recordTransaction(p, tx), StoreError, 'no claim, no transaction');
    await store.journal.claim(p);
    await store.journal.recordTransaction(p, tx);
    assert.deepEqual((await store.journal.unfinished()).map((r) => [r.state, r.txHash, r.relayerNonce, r.amount]), [
      ['submitted', tx.txHash, 7, 10_000n],
    ]);
    await store.journal.finish(p, { state: 'settled', txHash: tx.txHash });
    await assert.rejects(store.journal.finish(p, { state: 'failed', errorReason: 'x' }), StoreError, 'final is final');
    await store.journal.release(p);
    assert.equal((await store.journal.get(p))?.state, 'settled', 'a settled payment cannot be released');
    assert.deepEqual(await store.journal.unfinished(), []);
  });

  test('a kept result is read back for its payment, replaced by a later one, and forgotten once its payment expired or is gone', async () => {
    const store = await opened();
    const [p, q] = [payment('4'), payment('5')];
    assert.equal(await store.journal.keptResult(p), undefined);
    await store.journal.reserve(p);
    await store.journal.keepResult(p, { call: 'c1', result: '{"content":[]}' });
    await store.journal.keepResult(p, { call: 'c2', result: '{"content":[1]}' });
    assert.deepEqual(await store.journal.keptResult(p), { call: 'c2', result: '{"content":[1]}' });
    assert.equal(await store.journal.keptResult(q), undefined, 'kept per payment');
    await store.journal.keepResult(q, { call: 'c3', result: '{}' });
    await store.journal.forgetResults(Number(p.validBefore) - 1);
    assert.deepEqual(await store.journal.keptResult(p), { call: 'c2', result: '{"content":[1]}' }, 'its authorization is still valid');
    assert.equal(await store.journal.keptResult(q), undefined, 'a result without its payment is gone');
    await store.journal.forgetResults(Number(p.validBefore) + 1);
    assert.equal(await store.journal.keptResult(p), undefined, 'expired');
  });

  test('a released claim can be claimed again', async () => {
    const store = await opened();
    const p = payment('3');
    await store.journal.claim(p);
    await store.journal.release(p);
    assert.deepEqual(await store.journal.claim(p), { claimed: true });
  });
});
