import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { configSchema } from '../../src/config/schema.js';
import { purposes } from '../../src/facilitator/purposes.js';
import { useSandbox } from '../helpers/chain.js';
import { type FacilitatorApiOptions, facilitatorApi, samplePayment } from '../helpers/facilitator-api.js';
import { type PaymentOptions, keyOf, v1Request, v2Request } from '../helpers/payments.js';

const chain = useSandbox();
const setup = (options: FacilitatorApiOptions = {}) => facilitatorApi(chain, options);
const nowSeconds = () => BigInt(Math.floor(Date.now() / 1000));

/** An authorization signed the way coinbase/x402's Go client signs every one: now−600 s to now+3600 s. */
const goWindow = (overrides: Partial<PaymentOptions> = {}): PaymentOptions =>
  samplePayment(chain, { validAfter: nowSeconds() - 600n, validBefore: nowSeconds() + 3600n, ...overrides });

describe('the validity window: what the reference facilitator accepts', () => {
  for (const maxTimeoutSeconds of [60, 120, 300]) {
    test(`a Go client's one-hour authorization at maxTimeoutSeconds ${maxTimeoutSeconds} verifies and settles (v2 and v1)`, async () => {
      const { post } = await setup();
      for (const body of [await v2Request(goWindow({ maxTimeoutSeconds })), await v1Request(goWindow({ maxTimeoutSeconds }))]) {
        const verdict = await post('/verify', body);
        assert.equal(verdict.body.isValid, true, String(verdict.body.invalidMessage));
        const settled = await post('/settle', body);
        assert.equal(settled.body.success, true, String(settled.body.errorMessage));
      }
    });
  }

  test('a stricter bound is opt-in: with one set, the one-hour authorization is refused and nothing is sent', async () => {
    const { post } = await setup({ validityOverTimeoutSeconds: 30 });
    const txs = await chain.relayerTxCount();
    const long = await v2Request(goWindow({ maxTimeoutSeconds: 60 }));
    for (const path of ['/verify', '/settle'] as const) {
      const answer = await post(path, long);
      assert.equal(answer.body.invalidReason ?? answer.body.errorReason, 'invalid_exact_evm_payload_authorization_validity_too_long');
    }
    assert.equal(await chain.relayerTxCount(), txs);
    const within = await v2Request(samplePayment(chain, { maxTimeoutSeconds: 60 }));
    assert.equal((await post('/verify', within)).body.isValid, true);
  });

  test('an authorization valid past 2^63 - 1 s (any uint256 signs) is refused as invalid_payload, journals nothing and sends nothing', async () => {
    const { post } = await setup();
    const txs = await chain.relayerTxCount();
    const forever = await v2Request(samplePayment(chain, { validBefore: 1n << 63n }));
    for (const path of ['/verify', '/settle'] as const) {
      const answer = await post(path, forever);
      assert.equal(answer.status, 200);
      assert.equal(answer.body.invalidReason ?? answer.body.errorReason, 'invalid_payload');
    }
    assert.equal(await chain.relayerTxCount(), txs);
  });

  test('the bound is the config setting facilitator.maxValidityOverTimeoutSeconds, unset by default', () => {
    assert.equal(configSchema.parse({}).facilitator.maxValidityOverTimeoutSeconds, undefined);
    assert.equal(configSchema.parse({ facilitator: { maxValidityOverTimeoutSeconds: 30 } }).facilitator.maxValidityOverTimeoutSeconds, 30);
    assert.equal(configSchema.safeParse({ facilitator: { maxValidityOverTimeoutSeconds: -1 } }).success, false);
  });

  test('a paid result is kept for the authorization’s real window, not maxTimeoutSeconds: redelivered 30 minutes on', async () => {
    let offset = 0;
    const { facilitator, store } = await setup({ now: () => Math.floor(Date.now() / 1000) + offset });
    const call = purposes.call('weather', 'c0ffee');
    const body = await v2Request(goWindow({ maxTimeoutSeconds: 60 }));
    const held = await facilitator.reserve(body, call);
    assert.ok(held.isValid);
    await facilitator.keepResult(held.key, { call, result: '{"content":[]}' });
    const receipt = await facilitator.settle(body, call);
    assert.equal(receipt.success, true);

    offset = 1800;
    const later = Math.floor(Date.now() / 1000) + offset;
    await store.journal.forgetResults(later);
    assert.deepEqual(await facilitator.redeliver(body, call), { result: '{"content":[]}', receipt });
    await store.journal.forgetResults(Number(body.paymentPayload.payload.authorization.validBefore) + 1);
    assert.equal(await store.journal.keptResult(keyOf(body)), undefined, 'forgotten once the authorization expired');
  });
});
