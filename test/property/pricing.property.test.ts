import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { PriceError, atomicToUsd, priceOf, priceTableSchema, usdPrice, usdToAtomic } from '../../src/pricing/pricing.js';
import { anyInput, anyText, nearNumber, throwsOnly } from './arbitraries.js';
import { atomicOf, usdOf } from './oracles.js';

const RUNS = { numRuns: 1000 };
/** The largest amount the USD grammar can spell (12 whole digits, 6 decimals). */
const MAX_SPELLED = 10n ** 18n - 1n;

describe('pricing: USD strings ⇄ atomic units (properties)', () => {
  test('atomic → USD → atomic is the identity for every amount the grammar can spell', () => {
    fc.assert(
      fc.property(fc.oneof(fc.bigInt({ min: 0n, max: MAX_SPELLED }), fc.bigInt({ min: 0n, max: 10_000_000n })), (atomic) => {
        const usd = atomicToUsd(atomic);
        assert.equal(usd, usdOf(atomic));
        assert.equal(usdToAtomic(usd), atomic);
      }),
      RUNS,
    );
  });

  test('amounts past 12 whole digits are written exactly and refused when read back', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: MAX_SPELLED + 1n, max: 1n << 300n }), (atomic) => {
        const usd = atomicToUsd(atomic);
        assert.equal(usd, usdOf(atomic));
        assert.throws(() => usdToAtomic(usd), PriceError);
      }),
      RUNS,
    );
  });

  test('negative amounts are written with a leading minus and the digits of their magnitude', () => {
    fc.assert(
      fc.property(fc.oneof(fc.bigInt({ min: -MAX_SPELLED, max: -1n }), fc.bigInt({ min: -(1n << 128n), max: -1n })), (atomic) => {
        assert.equal(atomicToUsd(atomic), usdOf(atomic));
        if (-atomic <= MAX_SPELLED) assert.equal(usdToAtomic(atomicToUsd(atomic).slice(1)), -atomic);
      }),
      RUNS,
    );
  });

  test('a decimal with up to 6 decimals reads exactly; 7 or more is an error, never a rounding', () => {
    const decimal = fc.record({
      dollar: fc.boolean(),
      whole: fc.stringMatching(/^\d{1,12}$/),
      fraction: fc.option(fc.stringMatching(/^\d{1,12}$/), { nil: undefined }),
    });
    fc.assert(
      fc.property(decimal, ({ dollar, whole, fraction }) => {
        const text = `${dollar ? '$' : ''}${whole}${fraction === undefined ? '' : `.${fraction}`}`;
        if (fraction !== undefined && fraction.length > 6) {
          assert.throws(() => usdToAtomic(text), PriceError);
          assert.equal(usdPrice.safeParse(text).success, false);
          return;
        }
        const expected = BigInt(whole) * 1_000_000n + BigInt((fraction ?? '').padEnd(6, '0'));
        assert.equal(usdToAtomic(text), expected);
        assert.equal(usdPrice.parse(text), expected);
      }),
      RUNS,
    );
  });

  test('any text either reads as the oracle says or is refused with a PriceError / a zod issue', () => {
    const signed = fc
      .tuple(fc.constantFrom('-', '+', '\u2212', '--', '0x', '1e', ' 1 '), fc.stringMatching(/^\d{1,8}(\.\d{1,6})?$/))
      .map(([a, b]) => a + b);
    fc.assert(
      fc.property(fc.oneof(nearNumber, anyText, signed), (text) => {
        const expected = atomicOf(text);
        const read = throwsOnly(PriceError, () => usdToAtomic(text));
        const parsed = usdPrice.safeParse(text);
        if (typeof expected === 'bigint') {
          assert.deepEqual(read, { ok: true, value: expected });
          assert.deepEqual(parsed, { success: true, data: expected });
        } else {
          assert.equal(read.ok, false, `"${text}" should be refused`);
          assert.equal(parsed.success, false);
          assert.ok(parsed.error.issues.length > 0);
        }
      }),
      { numRuns: 2000 },
    );
  });

  test('usdPrice never throws, whatever it is given', () => {
    fc.assert(
      fc.property(anyInput, (value) => {
        const parsed = usdPrice.safeParse(value);
        if (parsed.success) assert.equal(typeof parsed.data, 'bigint');
        else assert.ok(parsed.error.issues.length > 0);
      }),
      RUNS,
    );
  });

  test('a tool the table does not name costs the default price, whatever its name', () => {
    const named = fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), fc.stringMatching(/^\d{1,3}\.\d{2}$/), { maxKeys: 4 });
    const prototypeNames = fc.constantFrom(
      'constructor',
      'toString',
      'valueOf',
      'hasOwnProperty',
      '__proto__',
      'isPrototypeOf',
      '__defineGetter__',
    );
    fc.assert(
      fc.property(named, fc.oneof(prototypeNames, fc.string({ minLength: 1 })), (tools, tool) => {
        const table = priceTableSchema.parse({ default: '0.01', tools });
        const expected = Object.hasOwn(tools, tool) ? usdToAtomic(tools[tool]!) : 10_000n;
        assert.equal(priceOf(table, tool), expected);
      }),
      RUNS,
    );
  });
});
