import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { type Address, type Hex, createWalletClient, http, parseGwei } from 'viem';
import { usdcAbi } from '../../contracts-abi/usdc.js';
import { BASE_USDC, networks } from '../../src/chain/networks.js';
import { usdcDomain } from '../../src/chain/eip3009.js';
import type { DemoAccount } from '../../src/chain/sandbox/accounts.js';
import { type Facilitator, createFacilitator } from '../../src/facilitator/facilitator.js';
import { purposes } from '../../src/facilitator/purposes.js';
import { type SqliteStore, openSqliteStore } from '../../src/store/sqlite.js';
import { useSandbox } from '../helpers/chain.js';
import { keyOf, signAuthorization, v2Request } from '../helpers/payments.js';

const chain = useSandbox({ isolate: false });
const PRICE = 20_000n;
/** A tip far above the relayer's: the attacker's transaction is ordered first in the block. */
const FRONT = { maxPriorityFeePerGas: parseGwei('50'), maxFeePerGas: parseGwei('100'), gas: 300_000n };

/** A wallet of the attacker's own (a sandbox relayer turnpike does not use here) to send with. */
const attacker = () =>
  createWalletClient({
    account: chain.sandbox.accounts.relayers[3]!,
    chain: networks.local.viemChain,
    transport: http(chain.sandbox.rpcUrl),
  });

type Signed = Awaited<ReturnType<typeof signAuthorization>>;
const sendTransfer = ({ authorization: a, signature }: Signed) =>
  attacker().writeContract({
    address: BASE_USDC,
    abi: usdcAbi,
    functionName: 'transferWithAuthorization',
    args: [a.from, a.to, BigInt(a.value), BigInt(a.validAfter), BigInt(a.validBefore), a.nonce, signature],
    ...FRONT,
  });

async function cancel(payer: DemoAccount, nonce: Hex) {
  const signature = await payer.signTypedData({
    domain: { ...usdcDomain(networks.base), chainId: 8453 },
    types: {
      CancelAuthorization: [
        { name: 'authorizer', type: 'address' },
        { name: 'nonce', type: 'bytes32' },
      ],
    },
    primaryType: 'CancelAuthorization',
    message: { authorizer: payer.address, nonce },
  });
  return attacker().writeContract({
    address: BASE_USDC,
    abi: usdcAbi,
    functionName: 'cancelAuthorization',
    args: [payer.address, nonce, signature],
    ...FRONT,
  });
}

describe('deferred settlement attacks: the payer makes a delivered payment fail in the same block', () => {
  let store: SqliteStore;
  let facilitator: Facilitator;
  before(async () => {
    store = await openSqliteStore({ path: chain.dbPath() });
    facilitator = createFacilitator({
      network: networks.local,
      client: chain.client,
      journal: store.journal,
      relayerKeys: [chain.sandbox.accounts.relayers[0]!.privateKey],
    });
  });
  afterEach(async () => {
    await chain.rpc('evm_setAutomine', [true]);
    await facilitator.drain();
  });
  after(() => store.close());

  const payTo = () => chain.sandbox.accounts.payees[1]!.address;

  const attacks: [string, (payer: DemoAccount, signed: Signed) => Promise<Hex>][] = [
    ['cancelAuthorization of the payment’s nonce', (payer, signed) => cancel(payer, signed.authorization.nonce as Hex)],
    [
      'transferWithAuthorization of the same nonce to an address of the payer’s own',
      (payer, signed) =>
        signAuthorization({
          payer,
          payTo: chain.sandbox.accounts.payees[0]!.address,
          amount: PRICE,
          nonce: signed.authorization.nonce as Hex,
        }).then(sendTransfer),
    ],
    [
      'the whole balance moved away under another nonce',
      async (payer) =>
        sendTransfer(
          await signAuthorization({
            payer,
            payTo: chain.sandbox.accounts.payees[0]!.address,
            amount: await chain.balanceOf(payer.address),
          }),
        ),
    ],
  ];

  for (const [index, [name, frontRun]] of attacks.entries()) {
    test(`a deferred payment front-run in its own block by ${name}: journalled failed and a loss, the payee unpaid, and the payer refused until cleared`, async () => {
      const payer = chain.sandbox.accounts.payers[2 + index]!;
      const payee = payTo();
      const before = await chain.balanceOf(payee);
      const request = await v2Request({ payer, payTo: payee, amount: PRICE });
      const signed = {
        authorization: request.paymentPayload.payload.authorization,
        signature: request.paymentPayload.payload.signature,
      } as Signed;
      await chain.rpc('evm_setAutomine', [false]);
      const answer = await facilitator.settle(request, purposes.call('s', `attack-${index}`), { deferred: true });
      assert.equal(answer.errorReason, 'settlement_pending', JSON.stringify(answer));
      const ours = answer.transaction as Hex;
      const theirs = await frontRun(payer, signed);
      await chain.rpc('evm_mine');
      await facilitator.drain();

      const [a, b] = await Promise.all([ours, theirs].map((hash) => chain.client.getTransactionReceipt({ hash })));
      assert.equal(a!.blockNumber, b!.blockNumber, 'one block');
      assert.ok(b!.transactionIndex < a!.transactionIndex, 'the attacker’s first');
      assert.equal(await chain.balanceOf(payee), before, 'the payee got nothing');
      const key = keyOf(request);
      const row = await store.journal.get(key);
      assert.deepEqual(
        [row?.state, row?.deferred],
        ['failed', true],
        JSON.stringify(row, (_, v) => (typeof v === 'bigint' ? String(v) : v)),
      );
      assert.deepEqual(await store.journal.losses(key), { count: 1, amount: PRICE });
      await chain.rpc('evm_setAutomine', [true]);
      const next = await facilitator.reserve(await v2Request({ payer, payTo: payee, amount: PRICE }), purposes.call('s', `next-${index}`));
      assert.equal(next.isValid, false);
      assert.match(String(!next.isValid && next.invalidReason), /payer_has_unsettled_losses/);
      assert.equal(await store.journal.clearLosses(payer.address as Address), 1);
    });
  }
});

describe('deferred settlement attacks: a batch carrying two payments of one payer to one payee, same amount', () => {
  let store: SqliteStore;
  let facilitator: Facilitator;
  before(async () => {
    store = await openSqliteStore({ path: chain.dbPath() });
    facilitator = createFacilitator({
      network: networks.local,
      client: chain.client,
      journal: store.journal,
      // One relayer: while its first transaction is on its way, the next payments queue into one batch.
      relayerKeys: [chain.sandbox.accounts.relayers[1]!.privateKey],
    });
  });
  afterEach(async () => {
    await chain.rpc('evm_setAutomine', [true]);
    await facilitator.drain();
  });
  after(() => store.close());

  test('a payer who cancels one of two batched payments ahead of the batch: that payment is a loss, not settled by the other’s Transfer log; the journal settles only what the payee got', async () => {
    const payer = chain.sandbox.accounts.payers[6]!;
    const payee = chain.sandbox.accounts.payees[1]!.address;
    const before = await chain.balanceOf(payee);
    const requests = await Promise.all(Array.from({ length: 4 }, () => v2Request({ payer, payTo: payee, amount: PRICE })));
    await chain.rpc('evm_setAutomine', [false]);
    const answers = await Promise.all(requests.map((r, i) => facilitator.settle(r, purposes.call('s', `batch-${i}`), { deferred: true })));
    for (const a of answers) assert.equal(a.errorReason, 'settlement_pending', JSON.stringify(a));
    // Two payments that went out in one transaction (a Multicall3 batch).
    const byTx = new Map<string, typeof requests>();
    requests.forEach((r, i) => byTx.set(answers[i]!.transaction, [...(byTx.get(answers[i]!.transaction) ?? []), r]));
    const batch = [...byTx.values()].find((rs) => rs.length >= 2);
    assert.ok(batch, `a batch among ${[...byTx.values()].map((rs) => rs.length)}`);
    const victim = batch[0]!;
    await cancel(payer, victim.paymentPayload.payload.authorization.nonce as Hex);
    await chain.rpc('evm_mine');
    await facilitator.drain();

    const rows = await Promise.all(requests.map((r) => store.journal.get(keyOf(r))));
    const settled = rows.filter((r) => r?.state === 'settled').length;
    assert.equal(await chain.balanceOf(payee), before + BigInt(settled) * PRICE, 'the journal settles only what the payee got');
    const lost = await store.journal.get(keyOf(victim));
    assert.deepEqual([lost?.state, lost?.deferred], ['failed', true]);
    assert.deepEqual(await store.journal.losses(keyOf(victim)), { count: 1, amount: PRICE });
    await store.journal.clearLosses(payer.address);
  });
});

describe('deferred settlement attacks: the instance-wide bound', () => {
  let store: SqliteStore;
  let facilitator: Facilitator;
  before(async () => {
    store = await openSqliteStore({ path: chain.dbPath() });
    facilitator = createFacilitator({
      network: networks.local,
      client: chain.client,
      journal: store.journal,
      relayerKeys: [chain.sandbox.accounts.relayers[2]!.privateKey],
      maxDeferredPerPayer: 2n * PRICE,
      maxDeferredTotal: 2n * PRICE,
    });
  });
  afterEach(async () => {
    await chain.rpc('evm_setAutomine', [true]);
    await facilitator.drain();
  });
  after(() => store.close());

  test('fresh payer addresses that all sign the same nonce still share the instance-wide bound: two payments of two are deferred, the third payer’s waits for its block', async () => {
    const payTo = chain.sandbox.accounts.payees[1]!.address;
    const nonce = `0x${'5a'.repeat(32)}` as Hex;
    const payers = [0, 1, 8].map((i) => chain.sandbox.accounts.payers[i]!);
    const requests = await Promise.all(payers.map((payer) => v2Request({ payer, payTo, amount: PRICE, nonce })));
    await chain.rpc('evm_setAutomine', [false]);
    for (const r of requests.slice(0, 2)) {
      assert.equal(
        (await facilitator.settle(r, purposes.call('s', r.paymentPayload.payload.authorization.from), { deferred: true })).errorReason,
        'settlement_pending',
      );
    }
    const third = requests[2]!;
    const settling = facilitator.settle(third, purposes.call('s', 'third'), { deferred: true });
    for (let i = 0; (await store.journal.get(keyOf(third)))?.state !== 'submitted'; i++) {
      assert.ok(i < 500, 'the third payment sent');
      await new Promise((r) => setTimeout(r, 10));
    }
    // Journalled before its broadcast: mined only once the node has it.
    const { txHash } = (await store.journal.get(keyOf(third)))!;
    for (let i = 0; !(await chain.client.getTransaction({ hash: txHash! }).then(Boolean, () => false)); i++) {
      assert.ok(i < 500, 'the third payment broadcast');
      await new Promise((r) => setTimeout(r, 10));
    }
    const deferred = (await Promise.all(requests.map((r) => store.journal.get(keyOf(r))))).map((row) => row?.deferred);
    await chain.rpc('evm_mine');
    const answer = await settling;
    assert.deepEqual(deferred, [true, true, false], 'the bound is every payer’s, whatever nonce each signed');
    assert.equal(answer.success, true, 'the third was settled strict');
  });
});
