import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { x402Client } from '@x402/core/client';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { type Address, type Hex, createWalletClient, http } from 'viem';
import { usdcAbi } from '../../contracts-abi/usdc.js';
import { BASE_USDC, networks } from '../../src/chain/networks.js';
import type { DemoAccount } from '../../src/chain/sandbox/accounts.js';
import { type Facilitator, createFacilitator } from '../../src/facilitator/facilitator.js';
import type { SettlementMode } from '../../src/facilitator/port.js';
import type { Listening } from '../../src/http/listen.js';
import { createLogger } from '../../src/log/logger.js';
import { revenueBook } from '../../src/operators/revenue.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import { x402Rail } from '../../src/rails/x402/rail.js';
import type { Store } from '../../src/store/store.js';
import { useSandbox } from '../helpers/chain.js';
import { type CountAnswer, callCount, countPayment, startCounterUpstream } from '../helpers/counter-upstream.js';
import { listenGateway } from '../helpers/gateway.js';
import { keyOf, signAuthorization } from '../helpers/payments.js';
import { eventually } from '../helpers/served.js';
import { backends } from '../helpers/stores.js';

const chain = useSandbox({ isolate: false });
const logger = createLogger({ level: 'silent', format: 'json' });
const PRICE = 20_000n;
let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;

type Receipt = { success: boolean; transaction: string; errorReason?: string; errorMessage?: string };
const receiptOf = (answer: CountAnswer) => answer.result?._meta?.['x402/payment-response'] as Receipt | undefined;
const keyOfPayment = (payment: { payload: unknown }) => keyOf({ paymentPayload: payment as never });
const mined = (hash: string) =>
  chain.client.getTransactionReceipt({ hash: hash as Hex }).then(
    () => true,
    () => false,
  );
const automine = (on: boolean) => chain.rpc('evm_setAutomine', [on]);
/** How long a call that must wait for its block is watched, once its transaction is sent, for an answer that must not come. */
const HELD_MS = 400;

type SignedAuthorization = Awaited<ReturnType<typeof signAuthorization>>;

/** Sends a signed EIP-3009 authorization from a relayer of the test's own (not turnpike's): its transaction hash. */
function sendAuthorization({ authorization: a, signature }: SignedAuthorization) {
  const sender = createWalletClient({
    account: chain.sandbox.accounts.relayers[3]!,
    chain: networks.local.viemChain,
    transport: http(chain.sandbox.rpcUrl),
  });
  return sender.writeContract({
    address: BASE_USDC,
    abi: usdcAbi,
    functionName: 'transferWithAuthorization',
    args: [a.from, a.to, BigInt(a.value), BigInt(a.validAfter), BigInt(a.validBefore), a.nonce, signature],
  });
}

/** Moves `amount` of `payer`'s USDC to `to` (an EIP-3009 transfer a relayer of the test's own sends). */
async function transfer(payer: DemoAccount, to: Address, amount: bigint) {
  await sendAuthorization(await signAuthorization({ payer, payTo: to, amount }));
}

for (const backend of backends) {
  describe(`deferred settlement: the result leaves once the transaction is signed and journalled (${backend.name})`, {
    skip: backend.skip,
  }, () => {
    let store: Store;
    let facilitator: Facilitator;
    let book: ReturnType<typeof revenueBook>;
    const servers: Listening[] = [];

    before(async () => {
      upstream ??= await startCounterUpstream();
      store = await backend.open();
      facilitator = createFacilitator({
        network: networks.local,
        client: chain.client,
        journal: store.journal,
        relayerKeys: [chain.sandbox.accounts.relayers[backend.name === 'sqlite' ? 1 : 2]!.privateKey],
        // Two calls' worth at once, at most; as much for every payer together, losses included.
        maxDeferredPerPayer: 2n * PRICE,
        maxDeferredTotal: 2n * PRICE,
      });
      book = revenueBook(store, { takeRateBps: 0, logger });
    });
    afterEach(async () => {
      await automine(true);
      await facilitator.drain();
    });
    after(async () => {
      await Promise.all(servers.map((s) => s.close()));
      await book.stop();
      await store.close();
    });

    /** Waits until `payment`'s transaction is signed, journalled and sent (`submitted`), however loaded the machine. */
    const sent = (payment: { payload: unknown }) =>
      eventually(
        () => store.journal.get(keyOfPayment(payment)),
        (row) => row?.state === 'submitted',
        'the settlement sent',
      );

    async function gateway(settlement: SettlementMode, server = `s-${servers.length}`, settler: Facilitator = facilitator) {
      const served = await listenGateway({
        upstream: { url: `${upstream.url}/mcp`, headers: {}, timeoutMs: 10_000 },
        plan: flatPlan(priceTableSchema.parse({ default: '0.02' })),
        payTo: chain.sandbox.accounts.payees[1]!.address,
        rails: [x402Rail({ facilitator: settler })],
        server,
        settlement,
        revenue: { book, usage: store.operators, custody: 'direct' },
      });
      servers.push(served);
      return `${served.url}/mcp`;
    }

    /** A facilitator that waits only 300 ms for a receipt, on a relayer of its own (`options` on top). */
    const impatient = (options: Partial<Parameters<typeof createFacilitator>[0]> = {}) =>
      createFacilitator({
        network: networks.local,
        client: chain.client,
        journal: store.journal,
        relayerKeys: [chain.sandbox.accounts.relayers[0]!.privateKey],
        receiptTimeoutMs: 300,
        ...options,
      });

    /**
     * A deferred call delivered, then the payer's wallet emptied before its settlement is mined (the
     * settlement held back from the pool meanwhile, then sent again as signed): a loss.
     */
    async function deliverThenEmpty(url: string, payer: DemoAccount) {
      const payment = await countPayment(url, payer);
      await automine(false);
      const answer = await callCount(url, payment);
      const { txHash, rawTx } = (await store.journal.get(keyOfPayment(payment)))!;
      await chain.rpc('anvil_dropTransaction', [txHash]);
      await transfer(payer, chain.sandbox.accounts.payees[0]!.address, await chain.balanceOf(payer.address));
      await chain.rpc('evm_mine');
      await chain.rpc('eth_sendRawTransaction', [rawTx]);
      await chain.rpc('evm_mine');
      await facilitator.drain();
      return { payment, answer };
    }

    test('a deferred call is delivered before its settlement is mined, with a receipt naming the transaction as not confirmed; mining settles it once', async () => {
      const url = await gateway('deferred');
      const payer = chain.sandbox.accounts.payers[3]!;
      const payment = await countPayment(url, payer);
      const payee = chain.sandbox.accounts.payees[1]!.address;
      const before = await chain.balanceOf(payee);
      const runs = upstream.runs();
      await automine(false);

      const answer = await callCount(url, payment);
      assert.equal(answer.result?.isError, undefined);
      assert.equal(answer.result?.content?.[0]?.text, String(runs + 1));
      const receipt = receiptOf(answer)!;
      assert.equal(receipt.success, false);
      assert.equal(receipt.errorReason, 'settlement_pending');
      assert.match(receipt.errorMessage!, /deferred settlement: the transaction is signed, journalled and sent, not confirmed yet/);
      assert.match(receipt.transaction, /^0x[0-9a-f]{64}$/);
      assert.equal(await mined(receipt.transaction), false, 'delivered before the block');
      const row = await store.journal.get(keyOfPayment(payment));
      assert.deepEqual([row?.state, row?.deferred, row?.txHash], ['submitted', true, receipt.transaction]);
      assert.equal(await chain.balanceOf(payee), before);

      await chain.rpc('evm_mine');
      await facilitator.drain();
      assert.equal((await store.journal.get(keyOfPayment(payment)))?.state, 'settled');
      assert.equal(await chain.balanceOf(payee), before + PRICE);
      // The same payment again gets the kept result, not a second run or transaction.
      const again = await callCount(url, payment);
      assert.equal(again.result?.content?.[0]?.text, String(runs + 1));
      assert.equal(receiptOf(again)?.success, true);
      assert.equal(upstream.runs(), runs + 1);
    });

    test('a strict call on the same gateway waits for its block: nothing leaves before the receipt', async () => {
      const url = await gateway('strict');
      const payment = await countPayment(url, chain.sandbox.accounts.payers[4]!);
      await automine(false);
      let answered = false;
      const answer = callCount(url, payment).then((a) => {
        answered = true;
        return a;
      });
      await sent(payment);
      await new Promise((r) => setTimeout(r, HELD_MS));
      assert.equal(answered, false);
      assert.equal((await store.journal.get(keyOfPayment(payment)))?.state, 'submitted');
      await chain.rpc('evm_mine');
      const receipt = receiptOf(await answer)!;
      assert.equal(receipt.success, true);
      assert.equal(await mined(receipt.transaction), true);
      assert.equal((await store.journal.get(keyOfPayment(payment)))?.deferred, false);
    });

    test('six concurrent paid calls of one payer with a cap of two: two are delivered before mining, the other four wait for their block; all six are paid', async () => {
      const url = await gateway('deferred');
      const payer = chain.sandbox.accounts.payers[5]!;
      const payments = await Promise.all(Array.from({ length: 6 }, () => countPayment(url, payer)));
      await automine(false);
      const early: CountAnswer[] = [];
      const answers = Promise.all(payments.map((p) => callCount(url, p).then((a) => (early.push(a), a))));
      // Wait until every payment is claimed (deferred or strict) and the deferred ones are answered.
      await eventually(
        () => Promise.all(payments.map((p) => store.journal.get(keyOfPayment(p)))),
        (rows) => rows.every((r) => r?.state === 'submitted') && early.length >= 2,
        'every payment sent and the deferred ones answered',
      );
      await new Promise((r) => setTimeout(r, HELD_MS));
      const rows = await Promise.all(payments.map((p) => store.journal.get(keyOfPayment(p))));
      assert.equal(rows.filter((r) => r?.deferred).length, 2);
      assert.equal(early.length, 2, 'only the deferred two are answered before the block');
      for (const a of early) assert.equal(receiptOf(a)?.errorReason, 'settlement_pending');

      await chain.rpc('evm_mine');
      const all = await answers;
      assert.equal(all.filter((a) => a.result?.isError === undefined).length, 6);
      assert.equal(all.filter((a) => receiptOf(a)?.success === true).length, 4);
      await facilitator.drain();
      for (const p of payments) assert.equal((await store.journal.get(keyOfPayment(p)))?.state, 'settled');
    });

    test('a payer who empties their wallet between delivery and mining: the payment is a loss, not revenue, and the payer is refused until an admin clears it', async () => {
      const server = `loss-${backend.name}`;
      const url = await gateway('deferred', server);
      const payer = chain.sandbox.accounts.payers[6]!;
      const payee = chain.sandbox.accounts.payees[1]!.address;
      const before = await chain.balanceOf(payee);

      const { payment, answer } = await deliverThenEmpty(url, payer);
      assert.equal(answer.result?.isError, undefined, 'delivered on the signed transaction');

      const row = await store.journal.get(keyOfPayment(payment));
      assert.equal(row?.state, 'failed');
      assert.equal(row?.deferred, true);
      assert.equal(await chain.balanceOf(payee), before);
      assert.deepEqual(await store.journal.losses(keyOfPayment(payment)), { count: 1, amount: PRICE });
      await book.flush();
      await book.resolve();
      const report = await store.operators.analytics({ serverId: server, from: 0, to: Date.now() + 1000 });
      assert.deepEqual(report.losses, { count: 1, amount: PRICE });
      assert.equal(report.byRail.find((r) => r.key === 'x402')?.revenue ?? 0n, 0n);

      // Refill the wallet: the payer is refused all the same, before the tool runs.
      await automine(true);
      await transfer(chain.sandbox.accounts.payers[7]!, payer.address, 1_000_000n);
      const runs = upstream.runs();
      const refused = await callCount(url, await countPayment(url, payer));
      assert.equal(refused.result?.isError, true);
      assert.match(JSON.stringify(refused.result), /payer_has_unsettled_losses/);
      assert.equal(upstream.runs(), runs);

      assert.equal(await store.journal.clearLosses(payer.address), 1);
      const paid = await callCount(url, await countPayment(url, payer));
      assert.equal(paid.result?.isError, undefined);
      assert.equal(upstream.runs(), runs + 1);
    });

    test('a strict call whose receipt takes longer than the facilitator waits is delivered pending, and so is deferred: when its payer empties the wallet first it is a loss, never released for another call', async () => {
      const server = `slow-receipt-${backend.name}`;
      const settler = impatient();
      const url = await gateway('strict', server, settler);
      const payer = chain.sandbox.accounts.payers[9]!;
      await transfer(chain.sandbox.accounts.payers[7]!, payer.address, 1_000_000n);
      try {
        const payment = await countPayment(url, payer);
        await automine(false);
        const answer = await callCount(url, payment);
        assert.equal(answer.result?.isError, undefined, 'delivered with a pending receipt');
        assert.equal(receiptOf(answer)?.errorReason, 'settlement_pending');
        const held = (await store.journal.get(keyOfPayment(payment)))!;
        assert.equal(held.deferred, true, 'its result left before the receipt');
        await chain.rpc('anvil_dropTransaction', [held.txHash]);
        await transfer(payer, chain.sandbox.accounts.payees[0]!.address, await chain.balanceOf(payer.address));
        await chain.rpc('evm_mine');
        await chain.rpc('eth_sendRawTransaction', [held.rawTx]);
        await chain.rpc('evm_mine');
        await settler.drain();

        const row = await store.journal.get(keyOfPayment(payment));
        assert.equal(row?.state, 'failed', 'a loss, not released: the authorization cannot pay for another call');
        assert.deepEqual(await store.journal.losses(keyOfPayment(payment)), { count: 1, amount: PRICE });
        await book.flush();
        await book.resolve();
        const report = await store.operators.analytics({ serverId: server, from: 0, to: Date.now() + 1000 });
        assert.deepEqual(report.losses, { count: 1, amount: PRICE });
        assert.equal(await store.journal.clearLosses(payer.address), 1);
      } finally {
        await automine(true);
        await settler.drain();
      }
    });

    test('a payment signed for a window too short to be sure of mining is never delivered before its receipt: not deferred, and a strict call past its receipt wait waits on for its block', async () => {
      const settler = impatient({ maxDeferredPerPayer: 2n * PRICE, maxDeferredTotal: 10n * PRICE });
      const payer = chain.sandbox.accounts.payers[5]!;
      try {
        for (const settlement of ['deferred', 'strict'] as const) {
          const at = await gateway(settlement, `short-${settlement}-${backend.name}`, settler);
          const required = (await callCount(at)).result!.structuredContent!;
          required.accepts[0]!.maxTimeoutSeconds = 20;
          const payment = await new x402Client().register('eip155:8453', new ExactEvmScheme(payer)).createPaymentPayload(required);
          await automine(false);
          let answered = false;
          const answer = callCount(at, payment).then((a) => ((answered = true), a));
          await eventually(
            async () => (await store.journal.get(keyOfPayment(payment)))?.state,
            (s) => s === 'submitted',
            'sent',
          );
          await new Promise((r) => setTimeout(r, 800)); // past the 300 ms receipt wait
          assert.equal(answered, false, `${settlement}: nothing leaves before the block`);
          await chain.rpc('evm_mine');
          const done = await answer;
          assert.equal(receiptOf(done)?.success, true, `${settlement}: ${JSON.stringify(done)}`);
          assert.equal((await store.journal.get(keyOfPayment(payment)))?.deferred, false);
          await automine(true);
        }
      } finally {
        await automine(true);
        await settler.drain();
      }
    });

    test('a strict call delivered pending whose own transaction is mined only after the authorization expired is turnpike’s loss, not the payer’s: their balance never moved and they are not refused', async () => {
      const server = `late-${backend.name}`;
      // Its clock a minute behind, it takes a 3 s window for 63 s: long enough to deliver pending (the chain's clock is not moved).
      const settler = impatient({ now: () => Math.floor(Date.now() / 1000) - 60 });
      const url = await gateway('strict', server, settler);
      const payer = chain.sandbox.accounts.payers[8]!;
      const required = (await callCount(url)).result!.structuredContent!;
      required.accepts[0]!.maxTimeoutSeconds = 3;
      const payment = await new x402Client().register('eip155:8453', new ExactEvmScheme(payer)).createPaymentPayload(required);
      const balance = await chain.balanceOf(payer.address);
      try {
        await automine(false);
        assert.equal(receiptOf(await callCount(url, payment))?.errorReason, 'settlement_pending');
        // turnpike's transaction waits in the pool (congestion, a relayer nonce stuck ahead of it) until the authorization expired.
        const validBefore = BigInt((payment.payload as { authorization: { validBefore: string } }).authorization.validBefore);
        while (BigInt(Math.floor(Date.now() / 1000)) <= validBefore) await new Promise((r) => setTimeout(r, 100));
        await chain.rpc('evm_mine');
        await settler.drain();

        const row = (await store.journal.get(keyOfPayment(payment)))!;
        assert.deepEqual([row.state, row.deferred], ['failed', true]);
        assert.match(row.errorMessage ?? '', /after the authorization expired/);
        assert.equal(await chain.balanceOf(payer.address), balance);
        assert.deepEqual(await store.journal.losses(keyOfPayment(payment)), { count: 0, amount: 0n }, 'nothing held against the payer');
        await book.flush();
        await book.resolve();
        const report = await store.operators.analytics({ serverId: server, from: 0, to: Date.now() + 1000 });
        assert.deepEqual(report.losses, { count: 1, amount: PRICE }, 'the operator’s revenue that did not come');
        await automine(true);
        const next = await callCount(url, await countPayment(url, payer));
        assert.equal(receiptOf(next)?.success, true, 'the payer’s next call is served');
      } finally {
        await automine(true);
        await settler.drain();
      }
    });

    test('someone who sends the payer’s own authorization ahead of turnpike’s transaction pays the payee: the payment is settled by that copy, not a loss, and the payer is not refused', async () => {
      const server = `copy-${backend.name}`;
      const url = await gateway('deferred', server);
      const payer = chain.sandbox.accounts.payers[8]!;
      const payment = await countPayment(url, payer);
      const payee = chain.sandbox.accounts.payees[1]!.address;
      const before = await chain.balanceOf(payee);
      await automine(false);

      const answer = await callCount(url, payment);
      assert.equal(answer.result?.isError, undefined, 'delivered on the signed transaction');
      // A watcher of the pool copies the authorization into its own transaction, mined ahead of turnpike's.
      const { txHash, rawTx } = (await store.journal.get(keyOfPayment(payment)))!;
      await chain.rpc('anvil_dropTransaction', [txHash]);
      const copy = await sendAuthorization(payment.payload as SignedAuthorization);
      await chain.rpc('evm_mine');
      await chain.rpc('eth_sendRawTransaction', [rawTx]);
      await chain.rpc('evm_mine');
      await facilitator.drain();

      assert.equal(await chain.balanceOf(payee), before + PRICE, 'the payee was paid, by the copy');
      const row = await store.journal.get(keyOfPayment(payment));
      assert.deepEqual([row?.state, row?.txHash], ['settled', copy]);
      assert.deepEqual(await store.journal.losses(keyOfPayment(payment)), { count: 0, amount: 0n });
      await automine(true);
      const runs = upstream.runs();
      const next = await callCount(url, await countPayment(url, payer));
      assert.equal(next.result?.isError, undefined, 'the payer who paid is served');
      assert.equal(upstream.runs(), runs + 1);
    });

    test('payers who each empty a fresh wallet cannot take more unpaid than the instance-wide bound: with one loss uncleared, a new payer gets one call early and the next waits for its block', async () => {
      const url = await gateway('deferred', `many-${backend.name}`);
      const drainer = chain.sandbox.accounts.payers[9]!;
      await transfer(chain.sandbox.accounts.payers[7]!, drainer.address, 1_000_000n);
      const { payment: lost } = await deliverThenEmpty(url, drainer);
      assert.deepEqual(await store.journal.losses(keyOfPayment(lost)), { count: 1, amount: PRICE });
      // A fresh address, well within its own cap of two calls: the loss and one call fill the bound of two.
      const fresh = chain.sandbox.accounts.payers[0]!;
      const [first, second] = [await countPayment(url, fresh), await countPayment(url, fresh)];
      await automine(false);
      assert.equal(receiptOf(await callCount(url, first))?.errorReason, 'settlement_pending', 'delivered before the block');
      let answered = false;
      const waiting = callCount(url, second).then((a) => ((answered = true), a));
      await sent(second);
      await new Promise((r) => setTimeout(r, HELD_MS));
      assert.equal(answered, false, 'past the bound: strict');
      assert.equal((await store.journal.get(keyOfPayment(second)))?.deferred, false);
      await chain.rpc('evm_mine');
      assert.equal(receiptOf(await waiting)?.success, true);
      assert.equal(await store.journal.clearLosses(drainer.address), 1);
    });

    test('a deferred settlement the node lost (a broadcast that never arrived, a transaction dropped from the pool) is sent again while its authorization lasts: settled, not a loss charged to a payer who paid', async () => {
      const url = await gateway('deferred');
      const payer = chain.sandbox.accounts.payers[1]!;
      const payment = await countPayment(url, payer);
      const payee = chain.sandbox.accounts.payees[1]!.address;
      const before = await chain.balanceOf(payee);
      await automine(false);
      assert.equal(receiptOf(await callCount(url, payment))?.errorReason, 'settlement_pending');
      const { txHash } = (await store.journal.get(keyOfPayment(payment)))!;
      await chain.rpc('anvil_dropTransaction', [txHash]);
      const known = () => chain.client.getTransaction({ hash: txHash! }).then(Boolean, () => false);
      await eventually(known, (resent) => resent, 'the same transaction in the pool again');
      await chain.rpc('evm_mine');
      await facilitator.drain();
      const row = await store.journal.get(keyOfPayment(payment));
      assert.deepEqual([row?.state, row?.txHash], ['settled', txHash]);
      assert.equal(await chain.balanceOf(payee), before + PRICE);
      assert.deepEqual(await store.journal.losses(keyOfPayment(payment)), { count: 0, amount: 0n });
    });
  });
}

after(() => upstream?.close());
