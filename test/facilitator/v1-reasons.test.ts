import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Hex } from 'viem';
import { SettleResponseSchema, VerifyResponseSchema } from 'x402/types';
import { useSandbox } from '../helpers/chain.js';
import { facilitatorApi, samplePayment } from '../helpers/facilitator-api.js';
import { type PaymentOptions, v1Request, v2Request } from '../helpers/payments.js';

const chain = useSandbox();
const payment = (overrides: Partial<PaymentOptions> = {}) => samplePayment(chain, overrides);
type V1Body = Awaited<ReturnType<typeof v1Request>>;

/** Verifies a v1 body changed by `change`; the answer must parse under the v1 reference's own schema. */
async function v1Refusal(change: (b: V1Body) => void, overrides: Partial<PaymentOptions> = {}) {
  const { post } = await facilitatorApi(chain);
  const body = await v1Request(payment(overrides));
  change(body);
  const verdict = await post('/verify', body);
  assert.equal(verdict.body.isValid, false);
  VerifyResponseSchema.parse(verdict.body);
  return verdict.body.invalidReason;
}

describe('a v1 payment is refused with the v1 reference’s reason strings', () => {
  test('an amount other than maxAmountRequired: invalid_exact_evm_payload_authorization_value', async () => {
    const reason = await v1Refusal((b) => void (b.paymentRequirements.maxAmountRequired = '20000'));
    assert.equal(reason, 'invalid_exact_evm_payload_authorization_value');
  });

  test('more than the payer holds: insufficient_funds', async () => {
    assert.equal(await v1Refusal(() => {}, { amount: 20_000_000_000n }), 'insufficient_funds');
  });

  test('a signature that is not the payer’s: invalid_exact_evm_payload_signature', async () => {
    const reason = await v1Refusal((b) => void (b.paymentPayload.payload.authorization.nonce = `0x${'ab'.repeat(32)}` as Hex));
    assert.equal(reason, 'invalid_exact_evm_payload_signature');
  });

  test('paying someone other than payTo: invalid_exact_evm_payload_recipient_mismatch', async () => {
    const other = chain.sandbox.accounts.payees[1]!.address;
    assert.equal(await v1Refusal((b) => void (b.paymentRequirements.payTo = other)), 'invalid_exact_evm_payload_recipient_mismatch');
  });

  test('another scheme: unsupported_scheme; a token not on the allow-list: invalid_payment_requirements', async () => {
    assert.equal(await v1Refusal((b) => void (b.paymentRequirements.scheme = 'upto')), 'unsupported_scheme');
    const fake = '0x000000000000000000000000000000000000dEaD';
    assert.equal(await v1Refusal((b) => void (b.paymentRequirements.asset = fake)), 'invalid_payment_requirements');
  });

  test('a replayed v1 settlement: invalid_payment, parsed by the v1 schema; the v2 replay keeps its v2 name', async () => {
    const { post } = await facilitatorApi(chain);
    const v1 = await v1Request(payment());
    assert.equal((await post('/settle', v1)).body.success, true);
    const again = await post('/settle', v1);
    assert.equal(again.body.errorReason, 'invalid_payment');
    // Only the reason: the reference's schema wants a transaction even where its facilitator sends "".
    SettleResponseSchema.shape.errorReason.parse(again.body.errorReason);
    const v2 = await v2Request(payment());
    await post('/settle', v2);
    assert.equal((await post('/settle', v2)).body.errorReason, 'invalid_exact_evm_nonce_already_used');
  });

  test('v2 refusals keep their names: the same amount mismatch is invalid_exact_evm_payload_authorization_value_mismatch', async () => {
    const { post } = await facilitatorApi(chain);
    const body = await v2Request(payment());
    body.paymentRequirements.amount = '20000';
    body.paymentPayload.accepted = body.paymentRequirements;
    assert.equal((await post('/verify', body)).body.invalidReason, 'invalid_exact_evm_payload_authorization_value_mismatch');
  });
});
