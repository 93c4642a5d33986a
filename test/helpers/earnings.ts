import assert from 'node:assert/strict';
import type { DemoAccount } from '../../src/chain/sandbox/accounts.js';
import { purposes } from '../../src/facilitator/purposes.js';
import type { SqliteStore } from '../../src/store/sqlite.js';
import type { useSandbox } from './chain.js';
import { v2Request } from './payments.js';

/**
 * Operator `id`, paid out to `payout`, with 1 USDC of platform-custody revenue earned (charge
 * `chargeId`) and really in the sandbox's treasury (settled from `payer`): what a withdrawal may
 * take, once.
 *
 * @example await operatorWithEarnings(chain, store, { id: 'op_test', payout, payer: chain.sandbox.accounts.payers[7]!, chargeId: 'ch_1' });
 */
export async function operatorWithEarnings(
  chain: ReturnType<typeof useSandbox>,
  store: SqliteStore,
  operator: { id: string; payout: `0x${string}`; payer: DemoAccount; chargeId: string },
): Promise<void> {
  const { id, payout, payer, chargeId } = operator;
  await store.operators.createOperator({
    id,
    email: `${id}@example.com`,
    name: id,
    keyHash: `hash-${id}`,
    createdAt: Date.now(),
    payoutAddress: payout,
  });
  const { facilitator } = await chain.facilitator([1]);
  const revenue = await v2Request({ payer, payTo: chain.sandbox.accounts.treasury.address, amount: 1_000_000n });
  assert.equal((await facilitator.settle(revenue, purposes.api)).success, true);
  await store.operators.recordCharges([
    {
      id: chargeId,
      serverId: 's',
      operatorId: id,
      rail: 'x402',
      caller: '0x',
      tool: 't',
      amount: 1_000_000n,
      operatorShare: 1_000_000n,
      platformShare: 0n,
      custody: 'platform',
      ref: `x402:${chargeId}`,
      state: 'earned',
      createdAt: Date.now(),
    },
  ]);
}
