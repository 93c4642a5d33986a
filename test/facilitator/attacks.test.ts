import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Address, Hex } from 'viem';
import { networks } from '../../src/chain/networks.js';
import { useSandbox } from '../helpers/chain.js';
import { facilitatorApi, samplePayment } from '../helpers/facilitator-api.js';
import { v2Request } from '../helpers/payments.js';

const chain = useSandbox();

describe('facilitator attacks: gas, relayer nonces', () => {
  test('concurrent /settle of several payments that together exceed the payer’s balance: one settles, the others are refused as insufficient balance before any transaction is sent for them', async () => {
    const { post } = await facilitatorApi(chain);
    const payer = chain.sandbox.accounts.payers[3]!;
    const balance = await chain.balanceOf(payer.address);
    // Each payment alone is covered; only one of them can ever be paid.
    const bodies = await Promise.all(Array.from({ length: 6 }, () => v2Request(samplePayment(chain, { payer, amount: balance }))));
    const answers = await Promise.all(bodies.map((b) => post('/settle', b)));
    assert.ok(answers.every((a) => a.status === 200));
    assert.equal(answers.filter((a) => a.body.success === true).length, 1);
    for (const a of answers.filter((x) => x.body.success !== true)) {
      assert.deepEqual([a.body.errorReason, a.body.transaction], ['invalid_exact_evm_insufficient_balance', ''], JSON.stringify(a.body));
    }
    assert.equal(await chain.balanceOf(payer.address), 0n);
  });

  test('a short-window /settle whose transaction the node drops is sent again as signed: it settles, and its relayer’s later transactions are not stuck behind its nonce', async () => {
    const relayer = chain.sandbox.accounts.relayers[2]!;
    const { post, store } = await facilitatorApi(chain, { relayerKeys: [relayer.privateKey], receiptTimeoutMs: 300 });
    // 20 s to expiry: too little to answer pending, so the request waits for the outcome.
    const body = await v2Request(samplePayment(chain, { payer: chain.sandbox.accounts.payers[4]!, amount: 1_234n, maxTimeoutSeconds: 20 }));
    const { authorization } = body.paymentPayload.payload;
    const key = {
      chainId: 8453,
      asset: networks.base.usdc.address.toLowerCase() as Address,
      payer: authorization.from.toLowerCase() as Address,
      nonce: authorization.nonce.toLowerCase() as Hex,
    };
    await chain.rpc('evm_setAutomine', [false]);
    let settling: ReturnType<typeof post> | undefined;
    try {
      settling = post('/settle', body);
      let txHash: Hex | undefined;
      while (!txHash) {
        txHash = (await store.journal.get(key))?.txHash;
        await new Promise((r) => setTimeout(r, 20));
      }
      await new Promise((r) => setTimeout(r, 100)); // broadcast
      await chain.rpc('anvil_dropTransaction', [txHash]); // a node restart, a mempool eviction
    } finally {
      await chain.rpc('evm_setAutomine', [true]);
    }
    const timeout = new Promise<'timed out'>((r) => setTimeout(() => r('timed out'), 15_000).unref());
    const settled = await Promise.race([settling, timeout]);
    assert.notEqual(settled, 'timed out', 'the dropped transaction was never sent again');
    assert.equal((settled as Awaited<typeof settling>)?.body.success, true, JSON.stringify(settled));
    const next = await Promise.race([post('/settle', await v2Request(samplePayment(chain, { amount: 55n }))), timeout]);
    assert.notEqual(next, 'timed out', 'the relayer is stuck behind a nonce that never reached the chain');
    assert.equal((next as Awaited<typeof settling>)?.body.success, true);
  });

  test('an authorization valid only after this very second (the token wants a later block) is refused as not yet valid, nothing sent', async () => {
    const now = BigInt(Math.floor(Date.now() / 1000));
    const { post } = await facilitatorApi(chain, { now: () => Number(now) });
    const txs = await chain.relayerTxCount();
    const body = await v2Request(samplePayment(chain, { amount: 7n, validAfter: now }));
    const settled = await post('/settle', body);
    assert.deepEqual([settled.body.errorReason, settled.body.transaction], ['invalid_exact_evm_payload_authorization_valid_after', '']);
    assert.equal(await chain.relayerTxCount(), txs, 'no gas was spent');
  });
});
