import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type Address, type Hex, createPublicClient, custom, encodeFunctionData, isAddressEqual, parseTransaction } from 'viem';
import { usdcAbi } from '../../contracts-abi/usdc.js';
import { MULTICALL3, networks } from '../../src/chain/networks.js';
import { type SignedTransaction, createRelayerPool } from '../../src/chain/relayer.js';
import { FacilitatorUnavailableError } from '../../src/facilitator/errors.js';
import { createFacilitator } from '../../src/facilitator/facilitator.js';
import { intentRules, toIntent, toNewPayment } from '../../src/facilitator/intent.js';
import type { NewPayment } from '../../src/store/journal/journal.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { purposes } from '../../src/facilitator/purposes.js';
import { reasons } from '../../src/x402/reasons.js';
import { useSandbox } from '../helpers/chain.js';
import { signAuthorization, v2Request } from '../helpers/payments.js';
import type { DemoAccount } from '../../src/chain/sandbox/accounts.js';

const chain = useSandbox();
const lower = (s: string) => s.toLowerCase() as Address;

/** A journal entry for a payment `payer` signs to the sandbox's first payee. */
async function signedPayment(payer: DemoAccount, amount: bigint, validBefore?: bigint): Promise<NewPayment> {
  const payTo = chain.sandbox.accounts.payees[0]!.address;
  const { signature, authorization } = await signAuthorization({ payer, payTo, amount, ...(validBefore ? { validBefore } : {}) });
  return {
    chainId: 8453,
    asset: lower(networks.base.usdc.address),
    payer: lower(payer.address),
    nonce: authorization.nonce.toLowerCase() as Hex,
    payTo: lower(payTo),
    amount,
    validAfter: BigInt(authorization.validAfter),
    validBefore: BigInt(authorization.validBefore),
    signature,
    network: 'eip155:8453',
    purpose: purposes.api,
  };
}

/** What a process that crashed mid-settlement leaves behind, step by step. */
async function crashedSettlement(stopAfter: 'claim' | 'record' | 'broadcast', options: { deferred?: boolean; validBefore?: bigint } = {}) {
  const path = chain.dbPath();
  const store = await openSqliteStore({ path });
  const payer = chain.sandbox.accounts.payers[5]!;
  const payTo = chain.sandbox.accounts.payees[0]!.address;
  const payment = await signedPayment(payer, 4_321n, options.validBefore);
  const { signature } = payment;
  const deferral = options.deferred ? { balance: 10n ** 12n, cap: 10n ** 12n, total: 10n ** 12n } : undefined;
  assert.deepEqual(await store.journal.claim(payment, deferral), { claimed: true, deferred: options.deferred ?? false });
  let txHash: Hex | undefined;
  if (stopAfter !== 'claim') {
    const pool = createRelayerPool({
      keys: [chain.sandbox.accounts.relayers[0]!.privateKey],
      client: chain.client,
      network: networks.local,
    });
    const data = encodeFunctionData({
      abi: usdcAbi,
      functionName: 'transferWithAuthorization',
      args: [payer.address, payTo, 4_321n, payment.validAfter, payment.validBefore, payment.nonce, signature],
    });
    const record = (tx: SignedTransaction) =>
      store.journal.recordTransaction(payment, { txHash: tx.txHash, rawTx: tx.rawTx, relayer: tx.relayer, relayerNonce: tx.nonce });
    let tx: SignedTransaction | undefined;
    const submitted = pool.submit({ to: networks.base.usdc.address, data }, async (signed) => {
      tx = signed;
      await record(signed);
      if (stopAfter === 'record') throw new Error('crash before the broadcast');
    });
    if (stopAfter === 'record') await assert.rejects(submitted, /crash/);
    else await submitted;
    txHash = tx!.txHash;
  }
  await store.close();
  return { path, payment, payTo, txHash };
}

/**
 * The sandbox's node, except that a transaction sent while `loseNext` is set never reaches it: that
 * send, and every later send of the same transaction, fails as a dropped connection does (the
 * sender cannot tell whether it arrived), or, once `refuseLost` is set, is refused. So is every
 * Multicall3 batch while `loseBatches` is set; the next send waits for `hold` if set.
 */
function lossyNode() {
  const lost = new Set<string>();
  const node = { loseNext: false, loseBatches: false, refuseLost: false, hold: undefined as Promise<void> | undefined, lost };
  const client = createPublicClient({
    chain: networks.local.viemChain,
    transport: custom({
      request: async (args: { method: string; params?: unknown }) => {
        if (args.method === 'eth_sendRawTransaction') {
          const [raw] = args.params as [Hex];
          const held = node.hold;
          node.hold = undefined;
          await held;
          const to = parseTransaction(raw).to;
          if (node.loseNext || (node.loseBatches && to && isAddressEqual(to, MULTICALL3))) lost.add(raw);
          node.loseNext = false;
          if (lost.has(raw)) throw new Error(node.refuseLost ? 'exceeds block gas limit' : 'fetch failed');
        }
        return chain.client.request(args as never);
      },
    }),
    pollingInterval: 5,
  });
  return { node, client };
}

async function restart(path: string, now?: () => number) {
  const store = await openSqliteStore({ path });
  const facilitator = createFacilitator({
    network: networks.local,
    client: chain.client,
    journal: store.journal,
    relayerKeys: chain.sandbox.accounts.relayers.map((r) => r.privateKey),
    ...(now ? { now } : {}),
  });
  return { store, facilitator };
}

describe('reconciliation after a crash', () => {
  test('signed and journalled but never broadcast: the very same transaction is sent, once', async () => {
    const crashed = await crashedSettlement('record');
    const before = await chain.balanceOf(crashed.payTo);
    const { store, facilitator } = await restart(crashed.path);
    assert.equal(await facilitator.reconcile(), 1);
    const record = await store.journal.get(crashed.payment);
    assert.equal(record?.state, 'settled');
    assert.equal(record?.txHash, crashed.txHash);
    assert.equal(await chain.balanceOf(crashed.payTo), before + 4_321n);
    assert.deepEqual(await store.journal.unfinished(), []);
  });

  test('a deferred payment (its result may have left) whose journalled transaction never reached the chain before its authorization expired: failed, never given back, and not held against the payer (turnpike never sent it)', async () => {
    const crashed = await crashedSettlement('record', { deferred: true, validBefore: BigInt(Math.floor(Date.now() / 1000) + 2) });
    await new Promise((r) => setTimeout(r, 3000));
    const txs = await chain.relayerTxCount();
    // A minute past the expiry (see the next test).
    const { store, facilitator } = await restart(crashed.path, () => Math.floor(Date.now() / 1000) + 61);
    await facilitator.reconcile();
    const record = await store.journal.get(crashed.payment);
    assert.deepEqual([record?.state, record?.deferred, record?.txHash], ['failed', true, crashed.txHash]);
    assert.match(record?.errorMessage ?? '', /never mined/);
    assert.deepEqual(await store.journal.losses(crashed.payment), { count: 0, amount: 0n }, 'excused: the payer is not refused');
    assert.equal(await chain.relayerTxCount(), txs, 'an expired authorization is not sent');
  });

  test('a deferred payment still in the pool when this clock passes its expiry is not written off until a minute later: block clocks lag, and it may still be mined and pay', async () => {
    await chain.rpc('evm_setAutomine', [false]);
    try {
      const crashed = await crashedSettlement('broadcast', { deferred: true });
      const store = await openSqliteStore({ path: crashed.path });
      const expiry = Number(crashed.payment.validBefore);
      const late = (seconds: number) =>
        createFacilitator({
          network: networks.local,
          client: chain.client,
          journal: store.journal,
          relayerKeys: [chain.sandbox.accounts.relayers[1]!.privateKey],
          now: () => expiry + seconds,
        });
      await late(1).reconcile();
      assert.deepEqual(await store.journal.losses(crashed.payment), { count: 0, amount: 0n }, 'not a loss yet');
      await chain.rpc('evm_mine');
      await late(61).reconcile();
      const record = await store.journal.get(crashed.payment);
      assert.deepEqual([record?.state, record?.txHash], ['settled', crashed.txHash]);
      await store.close();
    } finally {
      await chain.rpc('evm_setAutomine', [true]);
    }
  });

  test('broadcast and mined, but the receipt was never recorded: finished from the receipt, nothing re-sent', async () => {
    const crashed = await crashedSettlement('broadcast');
    const txs = await chain.relayerTxCount();
    const before = await chain.balanceOf(crashed.payTo);
    const { store, facilitator } = await restart(crashed.path);
    await facilitator.reconcile();
    assert.equal((await store.journal.get(crashed.payment))?.state, 'settled');
    assert.equal(await chain.relayerTxCount(), txs);
    assert.equal(await chain.balanceOf(crashed.payTo), before);
  });

  test('a batch of two whose second row was not yet written when the process died: never sent, both claims released, nothing settled behind the journal’s back', async () => {
    const path = chain.dbPath();
    const store = await openSqliteStore({ path });
    const payments = await Promise.all(
      [5, 6, 7].map(async (i) => {
        const payment = await signedPayment(chain.sandbox.accounts.payers[i]!, 1_234n);
        await store.journal.claim(payment);
        return payment;
      }),
    );
    const pool = createRelayerPool({
      keys: [chain.sandbox.accounts.relayers[0]!.privateKey],
      client: chain.client,
      network: networks.local,
    });
    const call = (p: NewPayment) => ({
      to: networks.base.usdc.address,
      data: encodeFunctionData({
        abi: usdcAbi,
        functionName: 'transferWithAuthorization',
        args: [p.payer, p.payTo, p.amount, p.validAfter, p.validBefore, p.nonce, p.signature],
      }),
    });
    const record = (p: NewPayment) => (tx: SignedTransaction) =>
      store.journal.recordTransaction(p, { txHash: tx.txHash, rawTx: tx.rawTx, relayer: tx.relayer, relayerNonce: tx.nonce });
    // The first call goes alone; the next two queue behind it and ride one Multicall3 transaction,
    // and the process dies while writing that batch's second row.
    const [first, one, two] = payments as [NewPayment, NewPayment, NewPayment];
    const recorded = new Promise<void>((resolve) => {
      void pool.submit(call(first), record(first));
      void pool.submit(call(one), record(one));
      void pool.submit(call(two), () => {
        resolve();
        return new Promise(() => {});
      });
    });
    await recorded;
    await store.close();
    const txs = await chain.relayerTxCount();

    const { store: after, facilitator } = await restart(path);
    assert.equal(await facilitator.reconcile(), 3);
    assert.equal((await after.journal.get(first))?.state, 'settled');
    for (const p of [one, two]) assert.equal(await after.journal.get(p), undefined);
    assert.equal(await chain.relayerTxCount(), txs, 'the half-written batch is not broadcast');
    for (const p of [one, two]) {
      const used = await chain.client.readContract({
        address: networks.base.usdc.address,
        abi: usdcAbi,
        functionName: 'authorizationState',
        args: [p.payer, p.nonce],
      });
      assert.equal(used, false);
    }
  });

  test('claimed with nothing sent: the claim is released and the payment can settle afterwards', async () => {
    const crashed = await crashedSettlement('claim');
    const { store, facilitator } = await restart(crashed.path);
    await facilitator.reconcile();
    assert.equal(await store.journal.get(crashed.payment), undefined);
  });

  test('journalled, never broadcast, and meanwhile sent by someone else: settled by that transaction (the payee was paid), never re-sent', async () => {
    const crashed = await crashedSettlement('record');
    // The payee (or anyone) submits the authorization directly, from another relayer.
    const other = createRelayerPool({
      keys: [chain.sandbox.accounts.relayers[3]!.privateKey],
      client: chain.client,
      network: networks.local,
    });
    const p = crashed.payment;
    const data = encodeFunctionData({
      abi: usdcAbi,
      functionName: 'transferWithAuthorization',
      args: [p.payer, p.payTo, p.amount, p.validAfter, p.validBefore, p.nonce, p.signature],
    });
    const tx = await other.submit({ to: networks.base.usdc.address, data }, async () => {});
    await chain.client.waitForTransactionReceipt({ hash: tx.txHash });
    const relayer0 = chain.sandbox.accounts.relayers[0]!.address;
    const nonceBefore = await chain.client.getTransactionCount({ address: relayer0 });
    const { store, facilitator } = await restart(crashed.path);
    await facilitator.reconcile();
    const record = await store.journal.get(crashed.payment);
    assert.deepEqual([record?.state, record?.txHash], ['settled', tx.txHash]);
    assert.equal(await chain.client.getTransactionCount({ address: relayer0 }), nonceBefore);
  });

  test('a paid call whose instance died after claiming its settlement, nothing sent: the same call again is told to retry, not given the kept result, and once the claim is released the payment is unused', async () => {
    const path = chain.dbPath();
    const payTo = chain.sandbox.accounts.payees[0]!.address;
    const request = await v2Request({ payer: chain.sandbox.accounts.payers[5]!, payTo, amount: 4_321n });
    const call = purposes.call('weather', 'a-call');
    const checked = toIntent(request, intentRules(networks.local), Math.floor(Date.now() / 1000));
    assert.ok(checked.ok);
    const { key } = checked.intent;
    // The instance that died: the call held, its tool's result kept, the settlement claimed; nothing signed or sent.
    const dead = await openSqliteStore({ path });
    assert.deepEqual(await dead.journal.reserve(toNewPayment(checked.intent, call)), { reserved: true });
    await dead.journal.keepResult(key, { call, result: JSON.stringify({ content: [{ type: 'text', text: 'the forecast' }] }) });
    assert.equal((await dead.journal.claim(toNewPayment(checked.intent, call))).claimed, true);
    await dead.close();

    const store = await openSqliteStore({ path });
    const facilitator = createFacilitator({
      network: networks.local,
      client: chain.client,
      journal: store.journal,
      relayerKeys: [chain.sandbox.accounts.relayers[1]!.privateKey],
      receiptTimeoutMs: 300,
    });
    // Another instance (or this one restarted, before its recovery pass) gets the client's retry.
    await assert.rejects(facilitator.redeliver(request, call), FacilitatorUnavailableError, 'no transaction is out: nothing to deliver on');
    await facilitator.reconcile();
    assert.equal(await store.journal.get(key), undefined, 'the claim is released');
    const used = await chain.client.readContract({
      address: networks.base.usdc.address,
      abi: usdcAbi,
      functionName: 'authorizationState',
      args: [key.payer, key.nonce],
    });
    assert.equal(used, false, 'nothing was paid: had the result left, it would have left free');
    assert.equal(await facilitator.redeliver(request, call), undefined);
    await store.close();
  });

  test('a settle retried after a restart answers from the journal, sending nothing', async () => {
    const path = chain.dbPath();
    const payTo = chain.sandbox.accounts.payees[1]!.address;
    const body = await v2Request({ payer: chain.sandbox.accounts.payers[6]!, payTo, amount: 9n });
    const first = await restart(path);
    // A top-up retried after a crash: its owner acts once per payment, so it is told the outcome again.
    const answer = await first.facilitator.settle(body, purposes.topup(payTo, 'key:k1'));
    assert.equal(answer.success, true);
    await first.store.close();
    const txs = await chain.relayerTxCount();
    const second = await restart(path);
    assert.deepEqual(await second.facilitator.settle(body, purposes.topup(payTo, 'key:k1')), answer);
    assert.equal(await chain.relayerTxCount(), txs);
  });

  for (const deferred of [false, true]) {
    test(`a ${deferred ? 'deferred' : 'strict'} settlement whose transaction never reached the node is given up without leaving its relayer a nonce gap: the relayer's next settlement is mined, and the given-up one never can be`, async () => {
      const { node, client } = lossyNode();
      const store = await openSqliteStore({ path: chain.dbPath() });
      let shift = 0;
      const relayer = chain.sandbox.accounts.relayers[2]!;
      const facilitator = createFacilitator({
        network: networks.local,
        client,
        journal: store.journal,
        relayerKeys: [relayer.privateKey],
        receiptTimeoutMs: 300,
        now: () => Math.floor(Date.now() / 1000) + shift,
      });
      const payTo = chain.sandbox.accounts.payees[0]!.address;
      const request = await v2Request({ payer: chain.sandbox.accounts.payers[5]!, payTo, amount: 1_000n, maxTimeoutSeconds: 120 });
      const checked = toIntent(request, intentRules(networks.local), Math.floor(Date.now() / 1000));
      assert.ok(checked.ok);
      const { key } = checked.intent;
      const gap = await chain.client.getTransactionCount({ address: relayer.address });

      node.loseNext = true;
      const pending = await facilitator.settle(request, purposes.api, { deferred });
      assert.equal(pending.errorReason, reasons.settlementPending);
      const sent = await store.journal.get(key);
      assert.equal(sent?.relayerNonce, gap);
      // Its authorization expired a minute ago by this clock (the chain never saw it): the journal gives it up.
      shift = 120 + 61;
      await facilitator.reconcile();
      shift = 0;
      const givenUp = await store.journal.get(key);
      if (deferred) assert.deepEqual([givenUp?.state, givenUp?.deferred], ['failed', true], 'a loss, never given back');
      else assert.equal(givenUp, undefined, 'released: the payer may pay again');

      // The chain agrees: the authorization is unused, its nonce taken by a transaction that moved nothing.
      const used = await chain.client.readContract({
        address: networks.base.usdc.address,
        abi: usdcAbi,
        functionName: 'authorizationState',
        args: [key.payer, key.nonce],
      });
      assert.equal(used, false);
      assert.equal(await chain.client.getTransactionCount({ address: relayer.address }), gap + 1);
      await assert.rejects(chain.client.sendRawTransaction({ serializedTransaction: sent!.rawTx! }), /nonce too low/i);
      await assert.rejects(chain.client.getTransactionReceipt({ hash: sent!.txHash! }));

      const before = await chain.balanceOf(payTo);
      const next = await v2Request({ payer: chain.sandbox.accounts.payers[6]!, payTo, amount: 2_000n });
      const answer = await facilitator.settle(next, purposes.api);
      assert.equal(answer.success, true, `the next settlement of the same relayer is mined: ${answer.errorReason ?? ''}`);
      assert.equal(await chain.balanceOf(payTo), before + 2_000n);
      await facilitator.drain();
      await store.close();
    });
  }

  test('a settlement given up before its authorization expires (its transaction lost, then refused) is released only once the no-op taking its nonce is mined: its transaction can never be mined after the release', async () => {
    const { node, client } = lossyNode();
    const store = await openSqliteStore({ path: chain.dbPath() });
    const relayer = chain.sandbox.accounts.relayers[3]!;
    const facilitator = createFacilitator({
      network: networks.local,
      client,
      journal: store.journal,
      relayerKeys: [relayer.privateKey],
      receiptTimeoutMs: 300,
    });
    const payTo = chain.sandbox.accounts.payees[0]!.address;
    const request = await v2Request({ payer: chain.sandbox.accounts.payers[5]!, payTo, amount: 1_000n, maxTimeoutSeconds: 120 });
    const checked = toIntent(request, intentRules(networks.local), Math.floor(Date.now() / 1000));
    assert.ok(checked.ok);
    const { key } = checked.intent;
    const gap = await chain.client.getTransactionCount({ address: relayer.address });
    node.loseNext = true;
    assert.equal((await facilitator.settle(request, purposes.api)).errorReason, reasons.settlementPending);
    const sent = await store.journal.get(key);
    // A later settlement of the same relayer waits behind the lost one's nonce.
    const next = await v2Request({ payer: chain.sandbox.accounts.payers[6]!, payTo, amount: 2_000n });
    assert.equal((await facilitator.settle(next, purposes.api)).errorReason, reasons.settlementPending);

    node.refuseLost = true;
    await chain.rpc('evm_setAutomine', [false]);
    try {
      await facilitator.reconcile();
      assert.equal((await store.journal.get(key))?.state, 'submitted', 'the no-op is not mined yet: the claim stays');
    } finally {
      await chain.rpc('evm_setAutomine', [true]);
    }
    await chain.rpc('evm_mine');
    await facilitator.reconcile();
    assert.equal(await store.journal.get(key), undefined, 'released once its nonce is taken');
    assert.equal(await chain.client.getTransactionCount({ address: relayer.address }), gap + 2, 'the no-op and the later settlement');
    await assert.rejects(chain.client.sendRawTransaction({ serializedTransaction: sent!.rawTx! }), /nonce too low/i);
    const used = await chain.client.readContract({
      address: networks.base.usdc.address,
      abi: usdcAbi,
      functionName: 'authorizationState',
      args: [key.payer, key.nonce],
    });
    assert.equal(used, false, 'the released payment is unpaid: the payer may pay again');
    await facilitator.drain();
    await store.close();
  });

  test('a batch given up for one payment keeps its nonce while another payment it carries is unfinished: no no-op takes it from under that one', async () => {
    const { node, client } = lossyNode();
    const dbPath = chain.dbPath();
    const store = await openSqliteStore({ path: dbPath });
    let shift = 0;
    const relayer = chain.sandbox.accounts.relayers[1]!;
    const facilitator = createFacilitator({
      network: networks.local,
      client,
      journal: store.journal,
      relayerKeys: [relayer.privateKey],
      receiptTimeoutMs: 300,
      now: () => Math.floor(Date.now() / 1000) + shift,
    });
    const payTo = chain.sandbox.accounts.payees[0]!.address;
    const keyOf = (request: Awaited<ReturnType<typeof v2Request>>) => {
      const checked = toIntent(request, intentRules(networks.local), Math.floor(Date.now() / 1000));
      assert.ok(checked.ok);
      return checked.intent.key;
    };
    const until = async (test: () => Promise<boolean>) => {
      for (let i = 0; !(await test()); i++) {
        if (i > 400) throw new Error('until: timed out');
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    const payers = chain.sandbox.accounts.payers;
    const [alone, short, long] = await Promise.all([
      v2Request({ payer: payers[4]!, payTo, amount: 1_000n }),
      v2Request({ payer: payers[5]!, payTo, amount: 1_000n, maxTimeoutSeconds: 60 }),
      v2Request({ payer: payers[6]!, payTo, amount: 1_000n, maxTimeoutSeconds: 600 }),
    ]);
    // The first goes alone, its broadcast held until the other two queue behind it: they ride one batch, which is lost.
    let open = () => {};
    node.hold = new Promise((r) => (open = r));
    node.loseBatches = true;
    const first = facilitator.settle(alone, purposes.api);
    await until(async () => (await store.journal.get(keyOf(alone)))?.state === 'submitted');
    const rest = [facilitator.settle(short, purposes.api, { deferred: true }), facilitator.settle(long, purposes.api)];
    await until(async () =>
      (await Promise.all([short, long].map((r) => store.journal.get(keyOf(r))))).every((r) => r?.state === 'submitting'),
    );
    await new Promise((r) => setTimeout(r, 50));
    open();
    assert.equal((await first).success, true);
    await Promise.all(rest);
    const [a, b] = await Promise.all([store.journal.get(keyOf(short)), store.journal.get(keyOf(long))]);
    assert.ok(
      a?.txHash && a.txHash === b?.txHash,
      `one batch: ${JSON.stringify([a, b], (_, v) => (typeof v === 'bigint' ? String(v) : v))}`,
    );
    const batchNonce = a.relayerNonce!;

    // The long one is another instance's now (it took it over); this one gives up the short one alone.
    const other = await openSqliteStore({ path: dbPath });
    assert.ok(await other.journal.adopt(keyOf(long), store.instanceId));
    shift = 60 + 61;
    await facilitator.reconcile({ owner: store.instanceId });
    shift = 0;
    const givenUp = await store.journal.get(keyOf(short));
    assert.deepEqual([givenUp?.state, givenUp?.txHash], ['failed', a.txHash], 'a loss, journalled with its batch');
    assert.equal(
      await chain.client.getTransactionCount({ address: relayer.address, blockTag: 'pending' }),
      batchNonce,
      'the batch’s nonce is still free for it',
    );
    // The long one's watcher (this instance's, its request answered pending) ends with the store.
    await other.close();
    await store.close();
  });
});
