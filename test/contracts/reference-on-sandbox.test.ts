import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { x402Facilitator } from '@x402/core/facilitator';
import type { PaymentPayload, PaymentRequirements } from '@x402/core/types';
import { toFacilitatorEvmSigner } from '@x402/evm';
import { ExactEvmScheme } from '@x402/evm/exact/facilitator';
import { createWalletClient, http, publicActions } from 'viem';
import { networks } from '../../src/chain/networks.js';
import { useSandbox } from '../helpers/chain.js';
import { samplePayment } from '../helpers/facilitator-api.js';
import { v2Request } from '../helpers/payments.js';

const chain = useSandbox();

/** The official facilitator (@x402/core + @x402/evm) on the sandbox, as its docs set it up. */
function reference() {
  const account = chain.sandbox.accounts.relayers[3]!;
  const transport = http(chain.sandbox.rpcUrl);
  const client = createWalletClient({ account, chain: networks.local.viemChain, transport }).extend(publicActions);
  const signer = toFacilitatorEvmSigner({ ...client, address: account.address } as unknown as Parameters<typeof toFacilitatorEvmSigner>[0]);
  return new x402Facilitator().register('eip155:8453', new ExactEvmScheme(signer));
}

const verifyWithReference = (body: Awaited<ReturnType<typeof v2Request>>) =>
  reference().verify(body.paymentPayload as unknown as PaymentPayload, body.paymentRequirements as PaymentRequirements);

describe('the official facilitator on the sandbox (its Multicall3 reads go through the planted contract)', () => {
  test('it diagnoses a payer short of USDC as such, not as a failed simulation', async () => {
    const body = await v2Request(samplePayment(chain, { payer: chain.sandbox.accounts.payers[5]!, amount: 20_000_000_000n }));
    const verdict = await verifyWithReference(body);
    assert.equal(verdict.isValid, false);
    assert.notEqual(verdict.invalidReason, 'transaction_simulation_failed');
    assert.match(String(verdict.invalidReason), /balance|funds/);
  });

  test('it verifies a good payment', async () => {
    const body = await v2Request(samplePayment(chain, { payer: chain.sandbox.accounts.payers[5]! }));
    const verdict = await verifyWithReference(body);
    assert.equal(verdict.isValid, true, verdict.invalidReason);
  });
});
