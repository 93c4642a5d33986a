import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PaymentDecodeError, decodePayment, encodeHeader } from '../../src/x402/codec.js';

const payload = {
  x402Version: 2,
  accepted: {
    scheme: 'exact',
    network: 'eip155:8453',
    asset: '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913',
    amount: '10000',
    payTo: '0x00000000000000000000000000000000000000bb',
    maxTimeoutSeconds: 60,
    extra: { name: 'USD Coin', version: '2' },
  },
  payload: { signature: '0x12', authorization: {} },
};

test('a payment reads the same from a base64 header and from a _meta object', () => {
  assert.deepEqual(decodePayment(encodeHeader(payload)), payload);
  assert.deepEqual(decodePayment(payload), payload);
  const v1 = { x402Version: 1, scheme: 'exact', network: 'base', payload: {} };
  assert.deepEqual(decodePayment(encodeHeader(v1)), v1);
});

test('bad encodings say what is wrong', () => {
  const cases: [unknown, RegExp][] = [
    ['not base64!', /not base64/],
    [Buffer.from('{"x402Version":').toString('base64'), /not JSON/],
    [encodeHeader({ x402Version: 3 }), /x402Version/],
    [encodeHeader({ ...payload, accepted: { ...payload.accepted, amount: -1 } }), /accepted\.amount/],
    [42, /root|x402Version/],
    [null, /root|x402Version/],
  ];
  for (const [input, message] of cases) {
    assert.throws(
      () => decodePayment(input),
      (e: unknown) => e instanceof PaymentDecodeError && message.test(e.message),
      String(input),
    );
  }
});
