import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import type { PublicClient } from 'viem';
import { networks } from '../../src/chain/networks.js';
import { createLogger } from '../../src/log/logger.js';
import { createWithdrawals } from '../../src/operators/withdrawals.js';
import { type SqliteStore, openSqliteStore } from '../../src/store/sqlite.js';
import { purposes } from '../../src/facilitator/purposes.js';
import { useSandbox } from '../helpers/chain.js';
import { operatorWithEarnings } from '../helpers/earnings.js';
import { v2Request } from '../helpers/payments.js';

const chain = useSandbox({ isolate: false });
const logger = createLogger({ level: 'silent', format: 'json' });
let store: SqliteStore;
const operatorId = 'op_attacker';
const payout = () => chain.sandbox.accounts.payees[0]!.address;

/**
 * The same client, except that receipts cannot be read while `down.receipts` is set: a rate-limited
 * or lagging RPC endpoint (429s, a load-balanced node a block behind), whose other answers are fine.
 */
const down = { receipts: false };
const flakyReceipts = (client: PublicClient) =>
  new Proxy(client, {
    get: (target, name) =>
      name === 'getTransactionReceipt'
        ? async (args: Parameters<PublicClient['getTransactionReceipt']>[0]) => {
            if (down.receipts) throw new Error('HTTP request failed. Status: 429 Too Many Requests');
            return target.getTransactionReceipt(args);
          }
        : Reflect.get(target, name),
  });

const withdrawalsOn = (client: PublicClient) =>
  createWithdrawals({
    store,
    client,
    network: networks.local,
    treasuryKey: chain.sandbox.accounts.treasury.privateKey,
    minimum: 1n,
    logger,
    receiptTimeoutMs: 300,
  });

describe('withdrawals under attack: never paid out twice, never more than earned', () => {
  before(async () => {
    store = await openSqliteStore({ path: chain.dbPath() });
    await operatorWithEarnings(chain, store, {
      id: operatorId,
      payout: payout(),
      payer: chain.sandbox.accounts.payers[6]!,
      chargeId: 'ch_attack',
    });
  });

  test('a withdrawal mined while the RPC cannot show its receipt stays reserved, and is confirmed once it can: the operator cannot withdraw it twice', async () => {
    const operator = (await store.operators.operator(operatorId))!;
    const flaky = withdrawalsOn(flakyReceipts(chain.client));
    const before = await chain.balanceOf(payout());
    down.receipts = true;
    try {
      const { withdrawal } = await flaky.request(operator, { idempotencyKey: 'all-of-it', amount: 1_000_000n });
      assert.equal(withdrawal.state, 'submitted', 'mined, but its receipt could not be read');
      assert.equal(await chain.balanceOf(payout()), before + 1_000_000n, 'the transfer is on chain');
      // The watcher looks while the receipts are still unreadable: the treasury's nonce is past the transfer's.
      await flaky.reconcile();
      assert.equal((await store.operators.withdrawal(withdrawal.id))!.state, 'submitted', 'not failed on an RPC error');
      assert.equal((await store.operators.balance(operatorId)).usdcAvailable, 0n, 'still reserved');
      await assert.rejects(flaky.request(operator, { idempotencyKey: 'again', amount: 1_000_000n }), /insufficient_balance|only 0/);
    } finally {
      down.receipts = false;
    }
    await flaky.reconcile();
    assert.equal((await store.operators.withdrawals(operatorId)).find((w) => w.idempotencyKey === 'all-of-it')!.state, 'confirmed');
    assert.equal(await chain.balanceOf(payout()), before + 1_000_000n, 'paid once');
    const balance = await store.operators.balance(operatorId);
    assert.deepEqual([balance.usdcWithdrawn, balance.usdcAvailable], [1_000_000n, 0n]);
  });
});

describe('withdrawals under attack: nothing is sent for nothing', () => {
  test('with no minimum configured, a withdrawal of 0 (asked, or "everything" of nothing) is refused and sends no transaction', async () => {
    const free = createWithdrawals({
      store,
      client: chain.client,
      network: networks.local,
      treasuryKey: chain.sandbox.accounts.treasury.privateKey,
      minimum: 0n,
      logger,
    });
    await store.operators.createOperator({
      id: 'op_spammer',
      email: 'spammer@example.com',
      name: 'spammer',
      keyHash: 'cc',
      createdAt: Date.now(),
      payoutAddress: payout(),
    });
    const operator = (await store.operators.operator('op_spammer'))!;
    const treasury = chain.sandbox.accounts.treasury.address;
    const nonce = await chain.client.getTransactionCount({ address: treasury });
    await assert.rejects(free.request(operator, { idempotencyKey: 'zero-1', amount: 0n }), /below_minimum|at least/);
    await assert.rejects(free.request(operator, { idempotencyKey: 'zero-2' }), /below_minimum|at least/);
    assert.equal(await chain.client.getTransactionCount({ address: treasury }), nonce, 'no gas spent');
    assert.deepEqual(await store.operators.withdrawals('op_spammer'), []);
  });
});

describe('withdrawals under attack: two senders at once (a lease handed over mid-send)', () => {
  test('a sender that read the withdrawal as requested before another paid it never broadcasts a second transfer', async () => {
    await store.operators.createOperator({
      id: 'op_twice',
      email: 'twice@example.com',
      name: 'twice',
      keyHash: 'dd',
      createdAt: Date.now(),
      payoutAddress: payout(),
    });
    const { facilitator } = await chain.facilitator([1]);
    const treasury = chain.sandbox.accounts.treasury.address;
    // The treasury holds other operators' revenue too: more than this withdrawal.
    const revenue = await v2Request({ payer: chain.sandbox.accounts.payers[6]!, payTo: treasury, amount: 900_000n });
    assert.equal((await facilitator.settle(revenue, purposes.api)).success, true);
    await store.operators.recordCharges([
      {
        id: 'ch_twice',
        serverId: 's',
        operatorId: 'op_twice',
        rail: 'x402',
        caller: '0x',
        tool: 't',
        amount: 300_000n,
        operatorShare: 300_000n,
        platformShare: 0n,
        custody: 'platform',
        ref: 'x402:twice',
        state: 'earned',
        createdAt: Date.now(),
      },
    ]);
    // The old sender stalls (a GC pause, a slow node) between reading the withdrawal and signing its transfer.
    let resume!: () => void;
    const resumed = new Promise<void>((r) => (resume = r));
    let stalled!: () => void;
    const stalling = new Promise<void>((r) => (stalled = r));
    const slow = new Proxy(chain.client, {
      get: (target, name) =>
        name === 'getTransactionCount'
          ? async (args: Parameters<PublicClient['getTransactionCount']>[0]) => {
              if (args.blockTag === 'pending') {
                stalled();
                await resumed;
              }
              return target.getTransactionCount(args);
            }
          : Reflect.get(target, name),
    });
    const old = withdrawalsOn(slow);
    const next = withdrawalsOn(chain.client);
    const operator = (await store.operators.operator('op_twice'))!;
    const reserved = await store.operators.requestWithdrawal({
      id: 'wd_twice',
      operatorId: operator.id,
      amount: 300_000n,
      to: payout(),
      idempotencyKey: 'twice',
      minimum: 1n,
    });
    assert.equal(reserved.ok, true);
    const before = await chain.balanceOf(payout());
    const oldRound = old.reconcile();
    await stalling;
    await next.reconcile();
    assert.equal((await store.operators.withdrawal('wd_twice'))!.state, 'confirmed', 'the new sender paid it');
    resume();
    await oldRound;
    assert.equal(await chain.balanceOf(payout()), before + 300_000n, 'paid once');
    assert.equal((await store.operators.withdrawal('wd_twice'))!.state, 'confirmed');
  });
});
