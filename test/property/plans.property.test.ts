import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { listPrice, planSchema, priceAt } from '../../src/pricing/plans.js';
import { atomicToUsd } from '../../src/pricing/pricing.js';
import { splitCharge } from '../../src/operators/take-rate.js';
import { anyInput } from './arbitraries.js';

const RUNS = { numRuns: 500 };

type Tier = { upTo?: number; price: bigint };

/** Valid graduated tiers: strictly increasing bounds, the last one open, prices in whole atomic units. */
const tiers = fc
  .tuple(
    fc.uniqueArray(fc.integer({ min: 1, max: 1_000_000 }), { minLength: 0, maxLength: 6 }),
    fc.array(fc.bigInt({ min: 0n, max: 10n ** 9n }), { minLength: 7, maxLength: 7 }),
  )
  .map(([bounds, prices]) => {
    const sorted = [...bounds].sort((a, b) => a - b);
    const steps: Tier[] = [...sorted.map((upTo, i) => ({ upTo, price: prices[i]! })), { price: prices[sorted.length]! }];
    return steps;
  });
const asInput = (t: Tier[]) => ({ type: 'tiered', tiers: t.map((x) => ({ ...x, price: atomicToUsd(x.price) })) });

describe('plans and the take rate (properties)', () => {
  test('the take-rate split always sums to the whole, never below zero, the platform rounded down', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 1n << 128n }), fc.integer({ min: 0, max: 10_000 }), (amount, bps) => {
        const { operator, platform } = splitCharge(amount, bps);
        assert.equal(operator + platform, amount);
        assert.ok(operator >= 0n && platform >= 0n);
        assert.ok(platform * 10_000n <= amount * BigInt(bps) && (platform + 1n) * 10_000n > amount * BigInt(bps));
      }),
      RUNS,
    );
  });

  test('a take rate that is not an integer in 0..10000 bps is refused', () => {
    fc.assert(
      fc.property(fc.oneof(fc.integer({ min: 10_001 }), fc.integer({ max: -1 }), fc.double({ noInteger: true })), (bps) => {
        assert.throws(() => splitCharge(1n, bps), RangeError);
      }),
    );
  });

  test('a tiered price is the price of the tier the call number falls in; over a month the tiers add up exactly', () => {
    fc.assert(
      fc.property(tiers, fc.integer({ min: 1, max: 2_000_000 }), (t, n) => {
        const plan = planSchema.parse(asInput(t));
        const expected = (t.find((x) => x.upTo === undefined || n <= x.upTo) ?? t.at(-1)!).price;
        assert.equal(priceAt(plan, 'tool', BigInt(n)), expected);
        assert.equal(listPrice(plan, 'tool'), t.find((x) => x.price > 0n)?.price ?? 0n);
      }),
      RUNS,
    );
    fc.assert(
      fc.property(tiers, fc.integer({ min: 1, max: 3_000 }), (t, calls) => {
        const plan = planSchema.parse(asInput(t));
        let total = 0n;
        for (let n = 1n; n <= BigInt(calls); n++) total += priceAt(plan, 'tool', n);
        // The same total, tier by tier: calls in each tier times its price.
        let byTier = 0n;
        let from = 1;
        for (const tier of t) {
          const to = Math.min(calls, tier.upTo ?? calls);
          if (to >= from) byTier += BigInt(to - from + 1) * tier.price;
          from = Math.max(from, (tier.upTo ?? calls) + 1);
        }
        assert.equal(total, byTier);
      }),
      { numRuns: 100 },
    );
  });

  test('free calls per month: the first N cost nothing, every later one the tool’s price', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 1_000 }),
        fc.bigInt({ min: 1n, max: 10n ** 9n }),
        fc.integer({ min: 1, max: 5_000 }),
        (free, price, n) => {
          const plan = planSchema.parse({ type: 'per_call', default: atomicToUsd(price), freeCallsPerMonth: free });
          assert.equal(priceAt(plan, 'tool', BigInt(n)), n <= free ? 0n : price);
        },
      ),
      RUNS,
    );
  });

  test('plan bodies: anything at all is refused with issues or parsed, never thrown; unordered or open-ended tiers are refused', () => {
    fc.assert(
      fc.property(anyInput, (input) => {
        planSchema.safeParse(input);
      }),
      RUNS,
    );
    fc.assert(
      fc.property(
        tiers.filter((t) => t.length >= 3),
        (t) => {
          const swapped = [t[1]!, t[0]!, ...t.slice(2)];
          assert.equal(planSchema.safeParse(asInput(swapped)).success, false, 'bounds out of order');
          assert.equal(planSchema.safeParse(asInput(t.slice(0, -1))).success, false, 'no open last tier');
        },
      ),
      RUNS,
    );
  });
});
