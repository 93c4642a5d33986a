import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { addressString, facilitatorRequestSchema, uintString } from '../../src/x402/schemas.js';
import { anyInput, anyText, hexBytes, nearNumber } from './arbitraries.js';
import { UINT256_MAX, address, facilitatorRequest, mutated, uint, viaJson } from './x402-arbitraries.js';

const RUNS = { numRuns: 1000 };
const HEX = '0123456789abcdefABCDEF';

/** Oracles by characters: a canonical decimal of at most uint256, and a 0x + 40 hex digits address. */
const isUint = (s: string) =>
  s.length > 0 && [...s].every((c) => c >= '0' && c <= '9') && (s === '0' || s[0] !== '0') && BigInt(s) <= UINT256_MAX;
const isAddress = (s: string) => s.length === 42 && s.startsWith('0x') && [...s.slice(2)].every((c) => HEX.includes(c));

/** safeParse must answer, never throw, whatever it is given. */
const accepts = (schema: { safeParse(v: unknown): { success: boolean } }, value: unknown) => schema.safeParse(value).success;

describe('x402 schemas (properties)', () => {
  test('uintString accepts exactly the canonical decimals 0 … 2^256 − 1', () => {
    const nearMisses = fc.oneof(
      fc.bigInt({ min: UINT256_MAX + 1n, max: 1n << 300n }).map(String),
      fc.tuple(fc.constantFrom('+', '-', '0', '00', ' ', '\n', '\u0660', 'x'), uint).map(([prefix, n]) => prefix + n),
      fc.tuple(uint, fc.constantFrom(' ', '\n', '.0', 'e0', 'n', '_0')).map(([n, suffix]) => n + suffix),
    );
    fc.assert(
      fc.property(fc.oneof(uint, nearMisses, nearNumber, anyText), (text) => {
        assert.equal(accepts(uintString, text), isUint(text), JSON.stringify(text));
      }),
      RUNS,
    );
  });

  test('uintString and addressString refuse every non-string without throwing', () => {
    fc.assert(
      fc.property(
        anyInput.filter((v) => typeof v !== 'string'),
        (value) => {
          assert.equal(accepts(uintString, value), false);
          assert.equal(accepts(addressString, value), false);
        },
      ),
      RUNS,
    );
  });

  test('addressString accepts exactly 0x and 40 hex digits, either case', () => {
    const nearMisses = fc.oneof(
      fc
        .integer({ min: 0, max: 45 })
        .chain((n) =>
          fc.tuple(
            fc.constantFrom('0x', '0X', 'x', '', ' 0x'),
            hexBytes(n).map((h) => h.slice(0, n)),
          ),
        )
        .map(([p, h]) => p + h),
      fc.tuple(address, fc.constantFrom('\n', ' ', 'g', '0')).map(([a, s]) => a + s),
      fc
        .tuple(address, fc.nat(41), fc.constantFrom('g', 'G', 'z', ' ', '\u0000', 'é'))
        .map(([a, i, c]) => a.slice(0, i + 1) + c + a.slice(i + 2)),
    );
    fc.assert(
      fc.property(fc.oneof(address, nearMisses, anyText), (text) => {
        assert.equal(accepts(addressString, text), isAddress(text), JSON.stringify(text));
      }),
      RUNS,
    );
  });

  test('facilitatorRequestSchema takes every valid v1/v2 request as sent, extra fields included', () => {
    fc.assert(
      fc.property(facilitatorRequest, (request) => {
        const parsed = facilitatorRequestSchema.safeParse(viaJson(request));
        assert.ok(parsed.success, parsed.error?.message);
        assert.deepEqual(parsed.data, viaJson(request));
      }),
      { numRuns: 500 },
    );
  });

  test('facilitatorRequestSchema never throws, and what it accepts has one version throughout and uint256 amounts', () => {
    const swapped = facilitatorRequest.map((r) => ({ ...r, x402Version: r.x402Version === 1 ? 2 : 1 }));
    fc.assert(
      fc.property(fc.oneof(mutated(facilitatorRequest), swapped, anyInput), (value) => {
        const parsed = facilitatorRequestSchema.safeParse(value);
        if (!parsed.success) return;
        const { x402Version, paymentPayload, paymentRequirements } = parsed.data;
        assert.equal(paymentPayload.x402Version, x402Version);
        const amount = 'amount' in paymentRequirements ? paymentRequirements.amount : paymentRequirements.maxAmountRequired;
        assert.ok(isUint(amount as string));
      }),
      RUNS,
    );
  });
});
