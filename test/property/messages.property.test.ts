import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { readJsonBody } from '../../src/gateway/json-body.js';
import { PAYMENT_META_KEYS, classify, forUpstream } from '../../src/gateway/messages.js';

const RUNS = { numRuns: 500 };
const priceOf = (tool: string) => (tool.startsWith('paid') ? 10_000n : 0n);
const decode = (bytes: Uint8Array) => JSON.parse(new TextDecoder().decode(bytes)) as unknown;

const payment = fc.record({ x402Version: fc.constant(2), payload: fc.jsonValue() });
const meta = fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 });
const toolCall = fc.record({
  jsonrpc: fc.constant('2.0'),
  id: fc.oneof(fc.integer(), fc.string({ maxLength: 8 })),
  method: fc.constant('tools/call'),
  params: fc.record({
    name: fc.oneof(fc.constant('paid-search'), fc.constant('free-echo'), fc.string({ maxLength: 12 })),
    arguments: fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 4 }),
    _meta: fc
      .tuple(meta, fc.option(payment, { nil: undefined }))
      .map(([m, p]) => (p ? { ...m, [PAYMENT_META_KEYS[0]]: p, [PAYMENT_META_KEYS[1]]: p } : m)),
  }),
});

/** The exact integer a re-encoded JSON number names (`1.5e+21` included). */
function integerOf(text: string): bigint {
  const [mantissa = '', exponent = '0'] = text.split('e+');
  const fraction = mantissa.split('.')[1] ?? '';
  return BigInt(mantissa.replace('.', '')) * 10n ** BigInt(Number(exponent) - fraction.length);
}

describe('message classification (properties)', () => {
  test('any JSON value is classified without throwing, and whatever is forwarded re-encodes to the same message minus payments', () => {
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), toolCall, fc.array(toolCall, { maxLength: 3 })), (value) => {
        const judged = classify(value, priceOf);
        assert.ok(['paid', 'list', 'forward', 'invalid'].includes(judged.kind));
        if (judged.kind === 'invalid') return;
        const sent = JSON.stringify(decode(forUpstream(judged.message)));
        for (const key of PAYMENT_META_KEYS) assert.ok(!sent.includes(`"${key}"`), `${key} reached the upstream`);
      }),
      RUNS,
    );
  });

  test('a tools/call of a priced tool is paid, alone, and never forwarded free, inside a batch or not', () => {
    fc.assert(
      fc.property(toolCall, fc.array(fc.jsonValue(), { maxLength: 3 }), (call, others) => {
        const priced = priceOf(call.params.name) > 0n;
        const alone = classify(call, priceOf);
        if (priced) assert.ok(alone.kind === 'paid' || alone.kind === 'invalid');
        else assert.equal(alone.kind, 'forward');
        const batched = classify([...others, call], priceOf);
        if (priced) assert.equal(batched.kind, 'invalid');
      }),
      RUNS,
    );
  });

  test('readJsonBody accepts exactly what JSON.parse reads from UTF-8 JSON without duplicate keys, and refuses the rest with a 4xx', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 6 }), (value) => {
        const read = readJsonBody(new TextEncoder().encode(JSON.stringify(value)), 'application/json');
        assert.ok(read.ok);
        assert.deepEqual(read.value, JSON.parse(JSON.stringify(value)));
      }),
      RUNS,
    );
    fc.assert(
      fc.property(
        fc.oneof(
          fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n }),
          fc.integer({ min: 0, max: 30 }).map((k) => 10n ** BigInt(k)),
        ),
        (n) => {
          const read = readJsonBody(new TextEncoder().encode(`[${n}]`), 'application/json');
          assert.equal(read.ok, integerOf(JSON.stringify(Number(n))) === n, `${n}: refused exactly when it re-encodes as another integer`);
        },
      ),
      RUNS,
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.string({ maxLength: 20 }), (bytes, type) => {
        const read = readJsonBody(bytes, type);
        if (!read.ok) assert.ok(read.status === 400 || read.status === 415);
      }),
      RUNS,
    );
  });
});
