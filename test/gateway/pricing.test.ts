import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PriceError, atomicToUsd, priceOf, priceTableSchema, usdToAtomic } from '../../src/pricing/pricing.js';

test('USD strings convert exactly to USDC atomic units', () => {
  assert.equal(usdToAtomic('0.01'), 10_000n);
  assert.equal(usdToAtomic('$1'), 1_000_000n);
  assert.equal(usdToAtomic('0.000001'), 1n);
  assert.equal(usdToAtomic('12.5'), 12_500_000n);
  assert.equal(usdToAtomic('0'), 0n);
  // 0.1 + 0.2 is not 0.3 in floats; here it is.
  assert.equal(usdToAtomic('0.1') + usdToAtomic('0.2'), usdToAtomic('0.3'));
});

test('more precision than USDC has, or anything not an amount, is refused', () => {
  assert.throws(() => usdToAtomic('0.0000001'), PriceError);
  for (const bad of ['-1', '1e-3', 'abc', '', '0.', '.5', '1,00', 'NaN']) assert.throws(() => usdToAtomic(bad), PriceError, bad);
});

test('atomic units print back exactly', () => {
  for (const usd of ['0.01', '1', '12.5', '0.000001', '1000000']) assert.equal(atomicToUsd(usdToAtomic(usd)), usd);
});

test('price table: per-tool prices, free tools, a default', () => {
  const table = priceTableSchema.parse({ default: '0.01', tools: { search: '0.05', echo: '0.02' }, free: ['echo', 'ping'] });
  assert.equal(priceOf(table, 'search'), 50_000n);
  assert.equal(priceOf(table, 'echo'), 0n);
  assert.equal(priceOf(table, 'other'), 10_000n);
  const bad = priceTableSchema.safeParse({ default: '0.0000001', tools: { x: 'cheap' } });
  assert.equal(bad.success, false);
  assert.deepEqual(
    bad.error?.issues.map((i) => i.path.join('.')),
    ['default', 'tools.x'],
  );
});
