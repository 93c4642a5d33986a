import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { type Hex, toHex } from 'viem';
import { createLogger } from '../../src/log/logger.js';
import { revenueBook, x402Ref } from '../../src/operators/revenue.js';
import { purposes } from '../../src/facilitator/purposes.js';
import type { Facilitator } from '../../src/facilitator/facilitator.js';
import type { SqliteStore } from '../../src/store/sqlite.js';
import { useSandbox } from '../helpers/chain.js';
import { keyOf, v2Request } from '../helpers/payments.js';

const chain = useSandbox({ isolate: false });
const logger = createLogger({ level: 'silent', format: 'json' });
let store: SqliteStore;
let facilitator: Facilitator;
const PRICE = 1_000_000n;
const treasury = () => chain.sandbox.accounts.treasury.address;
/** The attacking operator's own wallet (a direct-custody payee of theirs). */
const own = () => chain.sandbox.accounts.payees[0]!.address;
const payer = () => chain.sandbox.accounts.payers[5]!;

/**
 * A platform-custody x402 charge of `operatorId` on server `serverId` for the payment with `nonce`,
 * written `pending` as the gateway writes it before settling, whose journal row is gone: the
 * settlement was refused before it reached the chain (the relayer could not pay gas, the node
 * refused it) and its claim released, so the payer may retry. The book resolves it within a second.
 */
async function pendingCharge(operatorId: string, serverId: string, nonce: Hex) {
  const request = await v2Request({ payer: payer(), payTo: treasury(), amount: PRICE, nonce });
  const id = `ch_${nonce.slice(2, 12)}`;
  await store.operators.recordCharges([
    {
      id,
      serverId,
      operatorId,
      rail: 'x402',
      caller: payer().address.toLowerCase(),
      tool: 't',
      amount: PRICE,
      operatorShare: PRICE,
      platformShare: 0n,
      custody: 'platform',
      ref: x402Ref(keyOf(request), serverId),
      state: 'pending',
      createdAt: Date.now(),
    },
  ]);
  return request;
}

const nonce = () => toHex(crypto.getRandomValues(new Uint8Array(32)));
const earned = async (operatorId: string) => (await store.operators.balance(operatorId)).usdcEarned;

describe('revenue under attack: a platform charge is earned only by its own payment to the treasury', () => {
  before(async () => {
    ({ store, facilitator } = await chain.facilitator([1]));
    for (const id of ['op_thief', 'op_victim', 'op_honest'])
      await store.operators.createOperator({ id, email: `${id}@example.com`, name: id, keyHash: id, createdAt: Date.now() });
  });

  test('the same nonce signed again to the operator’s own address and settled: the treasury got nothing, so the charge is void, not withdrawable', async () => {
    const n = nonce();
    await pendingCharge('op_thief', 'thief-platform', n);
    // Before the book looks again, the payer settles another authorization with that nonce, to the operator's own wallet.
    const toSelf = await v2Request({ payer: payer(), payTo: own(), amount: PRICE, nonce: n });
    assert.equal((await facilitator.settle(toSelf, purposes.api)).success, true);
    assert.equal((await store.journal.get(keyOf(toSelf)))?.state, 'settled');
    const book = revenueBook(store, { takeRateBps: 0, logger, treasury: treasury() });
    await book.resolve();
    assert.equal(await earned('op_thief'), 0n, 'no USDC revenue: the treasury was not paid');
  });

  test('the same payment to the treasury taken for another operator’s server: the victim’s call, not the thief’s revenue', async () => {
    const n = nonce();
    const request = await pendingCharge('op_thief', 'thief-platform', n);
    // The payer presents the very payment again, for a call on the victim's server, which holds and settles it.
    const purpose = purposes.call('victim-platform', 'a'.repeat(64));
    assert.equal((await facilitator.reserve(request, purpose)).isValid, true);
    assert.equal((await facilitator.settle(request, purpose)).success, true);
    const book = revenueBook(store, { takeRateBps: 0, logger, treasury: treasury() });
    await book.resolve();
    assert.equal(await earned('op_thief'), 0n, 'the thief’s charge is not earned by the victim’s call');
  });

  test('a charge whose own payment settled to the treasury for a call on its server is earned', async () => {
    const n = nonce();
    const request = await pendingCharge('op_honest', 'honest-platform', n);
    const purpose = purposes.call('honest-platform', 'b'.repeat(64));
    assert.equal((await facilitator.reserve(request, purpose)).isValid, true);
    assert.equal((await facilitator.settle(request, purpose)).success, true);
    const book = revenueBook(store, { takeRateBps: 0, logger, treasury: treasury() });
    await book.resolve();
    assert.equal(await earned('op_honest'), PRICE);
  });
});
