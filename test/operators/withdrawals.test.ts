import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { Writable } from 'node:stream';
import type { PublicClient } from 'viem';
import { networks } from '../../src/chain/networks.js';
import { createLogger } from '../../src/log/logger.js';
import { createWithdrawals } from '../../src/operators/withdrawals.js';
import { type SqliteStore, openSqliteStore } from '../../src/store/sqlite.js';
import { useSandbox } from '../helpers/chain.js';
import { operatorWithEarnings } from '../helpers/earnings.js';

const chain = useSandbox({ isolate: false });
const logger = createLogger({ level: 'silent', format: 'json' });
let store: SqliteStore;
const operatorId = 'op_test';
const payout = () => chain.sandbox.accounts.payees[1]!.address;

/** The same client, except that broadcasting fails as if turnpike died right after journalling. */
const crashingOnBroadcast = (client: PublicClient) =>
  new Proxy(client, {
    get: (target, name) =>
      name === 'sendRawTransaction'
        ? async () => {
            throw new Error('killed before the broadcast');
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
    receiptTimeoutMs: 2_000,
  });

async function request(client: PublicClient, idempotencyKey: string, amount: bigint) {
  const operator = (await store.operators.operator(operatorId))!;
  return withdrawalsOn(client).request(operator, { idempotencyKey, amount });
}

describe('withdrawals: journalled before the broadcast, finished after a crash without paying twice', () => {
  before(async () => {
    store = await openSqliteStore({ path: chain.dbPath() });
    await operatorWithEarnings(chain, store, {
      id: operatorId,
      payout: payout(),
      payer: chain.sandbox.accounts.payers[7]!,
      chargeId: 'ch_1',
    });
  });

  test('killed between the journal and the broadcast: reconcile sends the very same transaction, once', async () => {
    const before = await chain.balanceOf(payout());
    const { withdrawal } = await request(crashingOnBroadcast(chain.client), 'crash-1', 100_000n);
    assert.equal(withdrawal.state, 'submitted', 'journalled, with the signed transaction');
    assert.equal(await chain.balanceOf(payout()), before);
    assert.equal((await store.operators.balance(operatorId)).usdcAvailable, 900_000n, 'the amount stays reserved');

    assert.equal(await withdrawalsOn(chain.client).reconcile(), 1);
    const done = (await store.operators.withdrawal(withdrawal.id))!;
    assert.equal(done.state, 'confirmed');
    assert.equal(done.txHash, withdrawal.txHash, 'the same signed transaction');
    assert.equal(await chain.balanceOf(payout()), before + 100_000n);
    assert.equal(await withdrawalsOn(chain.client).reconcile(), 0);
    assert.equal(await chain.balanceOf(payout()), before + 100_000n);
  });

  test('mined but never marked: finished from the receipt, nothing re-sent', async () => {
    const { withdrawal } = await request(chain.client, 'mined-1', 50_000n);
    assert.equal(withdrawal.state, 'confirmed');
    store.immediate((db) => db.prepare(`UPDATE withdrawals SET state = 'submitted' WHERE id = ?`).run(withdrawal.id));
    const before = await chain.balanceOf(payout());
    const nonce = await chain.client.getTransactionCount({ address: chain.sandbox.accounts.treasury.address });
    await withdrawalsOn(chain.client).reconcile();
    assert.equal((await store.operators.withdrawal(withdrawal.id))?.state, 'confirmed');
    assert.equal(await chain.client.getTransactionCount({ address: chain.sandbox.accounts.treasury.address }), nonce);
    assert.equal(await chain.balanceOf(payout()), before);
  });

  test('journalled, never broadcast, and its nonce used since: failed, and the money is available again', async () => {
    const { withdrawal } = await request(crashingOnBroadcast(chain.client), 'lost-1', 70_000n);
    assert.equal(withdrawal.state, 'submitted');
    // Another withdrawal takes the treasury's next nonce first.
    const other = await request(chain.client, 'other-1', 10_000n);
    assert.equal(other.withdrawal.state, 'confirmed');
    const before = await chain.balanceOf(payout());
    await withdrawalsOn(chain.client).reconcile();
    const lost = (await store.operators.withdrawal(withdrawal.id))!;
    assert.equal(lost.state, 'failed');
    assert.match(lost.error!, /nonce/);
    assert.equal(await chain.balanceOf(payout()), before);
    assert.equal((await store.operators.balance(operatorId)).usdcAvailable, 1_000_000n - 100_000n - 50_000n - 10_000n);
  });

  test('a withdrawal the node refuses outright is failed with nothing reserved', async () => {
    const broke = new Proxy(chain.client, {
      get: (target, name) =>
        name === 'estimateGas' ? async () => Promise.reject(new Error('transfer amount exceeds balance')) : Reflect.get(target, name),
    });
    const { withdrawal } = await request(broke, 'refused-1', 5_000n);
    assert.equal(withdrawal.state, 'failed');
    assert.match(withdrawal.error!, /could not be sent: transfer amount exceeds balance/);
    assert.equal((await store.operators.balance(operatorId)).usdcReserved, 0n);
  });
  test('a withdrawal from a treasury without ETH shows waitingForGas, alerts once at error level, and is sent as it is once the treasury is funded', async () => {
    const treasury = chain.sandbox.accounts.treasury.address;
    const funded = await chain.client.getBalance({ address: treasury });
    const lines: { level: number; msg: string }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString()) as { level: number; msg: string });
        done();
      },
    });
    const watched = createWithdrawals({
      store,
      client: chain.client,
      network: networks.local,
      treasuryKey: chain.sandbox.accounts.treasury.privateKey,
      minimum: 1n,
      logger: createLogger({ level: 'info', format: 'json' }, sink),
      receiptTimeoutMs: 2_000,
    });
    const operator = (await store.operators.operator(operatorId))!;
    const before = await chain.balanceOf(payout());
    await chain.rpc('anvil_setBalance', [treasury, '0x0']);
    let id: string;
    try {
      const { withdrawal } = await watched.request(operator, { idempotencyKey: 'no-gas-1', amount: 20_000n });
      id = withdrawal.id;
      assert.deepEqual([withdrawal.state, Boolean(withdrawal.txHash), withdrawal.waitingForGas], ['submitted', true, true]);
      await watched.reconcile();
      await watched.reconcile();
      assert.equal((await store.operators.withdrawal(id))?.waitingForGas, true);
      const alerts = lines.filter((l) => l.level === 50 && /waiting for gas/.test(l.msg));
      assert.equal(alerts.length, 1, 'alerted once, not on every look');
    } finally {
      await chain.rpc('anvil_setBalance', [treasury, `0x${funded.toString(16)}`]);
    }
    await watched.reconcile();
    const done = (await store.operators.withdrawal(id))!;
    assert.deepEqual([done.state, done.waitingForGas], ['confirmed', false]);
    assert.equal(await chain.balanceOf(payout()), before + 20_000n);
  });
});
