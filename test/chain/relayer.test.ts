import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { encodeFunctionData, keccak256, parseTransaction, recoverTransactionAddress } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { usdcAbi } from '../../contracts-abi/usdc.js';
import { BASE_USDC, networks } from '../../src/chain/networks.js';
import { BroadcastRejectedError, type SignedTransaction, createRelayerPool } from '../../src/chain/relayer.js';
import { nativeSecp256k1 } from '../../src/chain/secp256k1.js';
import { useSandbox } from '../helpers/chain.js';

const chain = useSandbox();
const balanceOfCall = encodeFunctionData({ abi: usdcAbi, functionName: 'balanceOf', args: [BASE_USDC] });

/** Signs through the pool and stops before the broadcast, returning what would have been sent. */
async function signOnly(pool: ReturnType<typeof createRelayerPool>) {
  let signed: SignedTransaction | undefined;
  await assert.rejects(
    pool.submit({ to: BASE_USDC, data: balanceOfCall }, async (tx) => {
      signed = tx;
      throw new Error('stop before the broadcast');
    }),
    (e: unknown) => e instanceof BroadcastRejectedError && /not sent/.test(e.message),
  );
  return signed!;
}

describe('relayer pool', () => {
  test('the native addon is installed here (CI measures the fast path)', () => {
    assert.ok(nativeSecp256k1, 'secp256k1/bindings failed to load');
  });

  test('a natively signed transaction is byte-for-byte what viem signs', async () => {
    const relayer = chain.sandbox.accounts.relayers[0]!;
    const tx = await signOnly(createRelayerPool({ keys: [relayer.privateKey], client: chain.client, network: networks.local }));
    const parsed = parseTransaction(tx.rawTx);
    assert.equal(tx.txHash, keccak256(tx.rawTx));
    const expected = await privateKeyToAccount(relayer.privateKey).signTransaction({
      chainId: 8453,
      type: 'eip1559',
      to: parsed.to!,
      data: parsed.data!,
      nonce: parsed.nonce!,
      gas: parsed.gas!,
      maxFeePerGas: parsed.maxFeePerGas!,
      maxPriorityFeePerGas: parsed.maxPriorityFeePerGas!,
    });
    assert.equal(tx.rawTx, expected);
    assert.equal(await recoverTransactionAddress({ serializedTransaction: tx.rawTx as never }), relayer.address);
  });

  test('calls queued behind a transaction in flight go out together in one Multicall3 batch', async () => {
    const relayer = chain.sandbox.accounts.relayers[1]!;
    const pool = createRelayerPool({ keys: [relayer.privateKey], client: chain.client, network: networks.local });
    const start = await chain.client.getTransactionCount({ address: relayer.address });
    const txs = await Promise.all(Array.from({ length: 12 }, () => pool.submit({ to: BASE_USDC, data: balanceOfCall }, async () => {})));
    const distinct = [...new Map(txs.map((t) => [t.txHash, t])).values()];
    // The first call goes alone; the eleven that queued meanwhile share the next transaction.
    assert.deepEqual(
      distinct.map((t) => t.nonce),
      [start, start + 1],
    );
    assert.equal(parseTransaction(distinct[1]!.rawTx).to, '0xca11bde05977b3631167028862be2a173976ca11');
    const receipts = await Promise.all(distinct.map((t) => chain.client.waitForTransactionReceipt({ hash: t.txHash, timeout: 5000 })));
    assert.ok(receipts.every((r) => r.status === 'success'));
  });

  test('a refused transaction uses up no nonce: the next one takes it', async () => {
    const broke = `0x${'77'.repeat(32)}` as const; // a key with no ETH at all
    const pool = createRelayerPool({ keys: [broke], client: chain.client, network: networks.local });
    await assert.rejects(
      pool.submit({ to: BASE_USDC, data: balanceOfCall }, async () => {}),
      (e: unknown) => e instanceof BroadcastRejectedError && e.kind === 'funds',
    );
    const address = privateKeyToAccount(broke).address;
    await chain.rpc('anvil_setBalance', [address, '0xDE0B6B3A7640000']);
    const tx = await pool.submit({ to: BASE_USDC, data: balanceOfCall }, async () => {});
    assert.equal(tx.nonce, 0);
  });
});
