import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { PaymentDecodeError, decodePayment, encodeHeader, paymentPayloadSchema } from '../../src/x402/codec.js';
import { anyInput, json } from './arbitraries.js';
import { anyPayload, mutated, payloadV1, payloadV2, viaJson } from './x402-arbitraries.js';

const RUNS = { numRuns: 500 };

/** Decodes `value`: a schema-valid payment, or a PaymentDecodeError; anything else fails. */
function decodeOrRefuse(value: unknown) {
  try {
    const payment = decodePayment(value);
    assert.ok(paymentPayloadSchema.safeParse(payment).success, 'decoded a payment the schema refuses');
    return payment;
  } catch (error) {
    assert.ok(error instanceof PaymentDecodeError, `expected a PaymentDecodeError, got ${String(error)}`);
    assert.match(error.message, /^payment /);
    return undefined;
  }
}

const base64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');

describe('x402 codec: headers and _meta payments (properties)', () => {
  test('encodeHeader → decodePayment gives back every valid v1 and v2 payment', () => {
    fc.assert(
      fc.property(anyPayload, (payment) => {
        const header = encodeHeader(payment);
        assert.match(header, /^[A-Za-z0-9+/]*={0,2}$/);
        assert.equal(header.length % 4, 0);
        assert.deepEqual(decodePayment(header), viaJson(payment));
        assert.deepEqual(decodePayment(`  ${header}\n`), viaJson(payment));
      }),
      RUNS,
    );
  });

  test('a payment given as an object (MCP _meta) decodes to itself', () => {
    fc.assert(
      fc.property(anyPayload, (payment) => {
        assert.deepEqual(decodePayment(viaJson(payment)), viaJson(payment));
      }),
      RUNS,
    );
  });

  test('any value, string or object, decodes to a valid payment or throws PaymentDecodeError', () => {
    fc.assert(
      fc.property(anyInput, (value) => void decodeOrRefuse(value)),
      { numRuns: 1000 },
    );
  });

  test('base64 garbage (random bytes, random JSON, broken padding) only ever throws PaymentDecodeError', () => {
    const garbage = fc.oneof(
      fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes).toString('base64')),
      json.map((value) => encodeHeader(value)),
      fc.base64String({ maxLength: 80 }),
      fc.tuple(anyPayload, fc.nat(), fc.constantFrom('', '=', '==', '===', '-', '_', ' ', '\u0000', '*')).map(([p, at, insert]) => {
        const header = encodeHeader(p);
        const i = at % (header.length + 1);
        return header.slice(0, i) + insert + header.slice(i + insert.length);
      }),
      fc.string().map(base64),
    );
    fc.assert(
      fc.property(garbage, (value) => void decodeOrRefuse(value)),
      { numRuns: 1000 },
    );
  });

  test('a valid payment with one field replaced or removed decodes only if it still meets the schema', () => {
    fc.assert(
      fc.property(fc.oneof(mutated(payloadV1), mutated(payloadV2)), fc.boolean(), (value, asHeader) => {
        const valid = paymentPayloadSchema.safeParse(value).success;
        const decoded = decodeOrRefuse(asHeader ? encodeHeader(value) : value);
        assert.equal(decoded !== undefined, valid);
      }),
      RUNS,
    );
  });
});
