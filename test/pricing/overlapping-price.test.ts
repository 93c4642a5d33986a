import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { overlappingPrice, planSchema, priceAt } from '../../src/pricing/plans.js';
import { atomicToUsd } from '../../src/pricing/pricing.js';

const paidThenFree = planSchema.parse({ type: 'tiered', tiers: [{ upTo: 3, price: '0.01' }, { price: '0' }] });
const volume = planSchema.parse({ type: 'tiered', tiers: [{ upTo: 3, price: '0.01' }, { upTo: 6, price: '0.005' }, { price: '0.001' }] });
const rising = planSchema.parse({ type: 'tiered', tiers: [{ upTo: 2, price: '0' }, { upTo: 4, price: '0.005' }, { price: '0.01' }] });
const freeCalls = planSchema.parse({ type: 'per_call', default: '0.02', freeCallsPerMonth: 5 });
const subscription = planSchema.parse({
  type: 'subscription',
  monthlyUsd: '10',
  callsPerMonth: 3,
  overage: { default: '0.03' },
});

describe('overlappingPrice: a call priced at the highest price of the positions the calls running beside it may leave it', () => {
  test('paid then free: a call is free only once the paid calls were delivered, not while others merely run', () => {
    assert.equal(overlappingPrice(paidThenFree, 't', 4n, 3n), 0n, 'three delivered: the fourth is free');
    assert.equal(overlappingPrice(paidThenFree, 't', 4n, 0n), 10_000n, 'three running that may fail: it may be the first');
    assert.equal(overlappingPrice(paidThenFree, 't', 7n, 2n), 10_000n, 'it may be the third');
    assert.equal(overlappingPrice(paidThenFree, 't', 7n, 3n), 0n);
  });

  test('volume discounts: the dearest tier the call may fall in', () => {
    assert.equal(overlappingPrice(volume, 't', 8n, 5n), 5_000n);
    assert.equal(overlappingPrice(volume, 't', 8n, 6n), 1_000n);
    assert.equal(overlappingPrice(volume, 't', 8n, 0n), 10_000n);
    assert.equal(overlappingPrice(volume, 't', 2n, 1n), 10_000n);
  });

  test('prices that only rise: exactly priceAt(calls), whatever is running', () => {
    for (let calls = 1n; calls <= 8n; calls++) {
      for (let delivered = 0n; delivered < calls; delivered++) {
        assert.equal(overlappingPrice(rising, 't', calls, delivered), priceAt(rising, 't', calls));
        assert.equal(overlappingPrice(freeCalls, 't', calls, delivered), priceAt(freeCalls, 't', calls));
        assert.equal(overlappingPrice(subscription, 't', calls, delivered), priceAt(subscription, 't', calls));
      }
    }
  });

  test('free calls and an allowance: free only if the call’s number, running calls included, is within them', () => {
    assert.equal(overlappingPrice(freeCalls, 't', 5n, 0n), 0n);
    assert.equal(overlappingPrice(freeCalls, 't', 6n, 0n), 20_000n);
    assert.equal(overlappingPrice(freeCalls, 't', 6n, 5n), 20_000n);
    assert.equal(overlappingPrice(subscription, 't', 3n, 0n), 0n);
    assert.equal(overlappingPrice(subscription, 't', 4n, 3n), 30_000n);
  });

  test('free tools of a tiered plan stay free; delivered at or above calls (counts from before) is priceAt(calls)', () => {
    const withFree = planSchema.parse({ type: 'tiered', tiers: [{ upTo: 3, price: '0.01' }, { price: '0' }], free: ['ping'] });
    assert.equal(overlappingPrice(withFree, 'ping', 9n, 0n), 0n);
    assert.equal(overlappingPrice(paidThenFree, 't', 4n, 4n), 0n);
    assert.equal(overlappingPrice(paidThenFree, 't', 4n, 9n), 0n);
    assert.equal(overlappingPrice(paidThenFree, 't', 2n, 9n), 10_000n);
  });

  test('any tiers, any counts: the maximum of priceAt over delivered + 1 … calls, position by position', () => {
    const plans = fc
      .tuple(
        fc.uniqueArray(fc.integer({ min: 1, max: 40 }), { minLength: 0, maxLength: 5 }),
        fc.array(fc.bigInt({ min: 0n, max: 10n ** 7n }), { minLength: 6, maxLength: 6 }),
      )
      .map(([bounds, prices]) => {
        const sorted = [...bounds].sort((a, b) => a - b);
        const tiers = [
          ...sorted.map((upTo, i) => ({ upTo, price: atomicToUsd(prices[i]!) })),
          { price: atomicToUsd(prices[sorted.length]!) },
        ];
        return planSchema.parse({ type: 'tiered', tiers });
      });
    fc.assert(
      fc.property(plans, fc.integer({ min: 1, max: 60 }), fc.integer({ min: 0, max: 60 }), (plan, c, d) => {
        const calls = BigInt(c);
        const delivered = BigInt(Math.min(d, c - 1));
        let max = 0n;
        for (let p = delivered + 1n; p <= calls; p++) if (priceAt(plan, 't', p) > max) max = priceAt(plan, 't', p);
        assert.equal(overlappingPrice(plan, 't', calls, delivered), max);
      }),
      { numRuns: 1000 },
    );
  });
});
