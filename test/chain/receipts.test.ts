import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { networks } from '../../src/chain/networks.js';
import { receiptCadence } from '../../src/chain/receipts.js';

describe('receipt cadence: learnt from the node, not from the network’s nominal clock', () => {
  test('before anything is observed, Base is polled at its usual 250 ms', () => {
    assert.equal(receiptCadence(networks.base).pollMs(), 250);
  });

  test('a node whose transactions show up at once (an automining anvil served as Base) is asked again within milliseconds', () => {
    const cadence = receiptCadence(networks.base);
    for (let i = 0; i < 10; i++) cadence.observe(1);
    assert.ok(cadence.pollMs() <= 5, `polls every ${cadence.pollMs()} ms`);
    assert.ok(cadence.pollMs() >= 2, 'never a busy loop');
  });

  test('a node that slows down (real 2 s blocks) is polled at a fraction of it again, never slower than the network’s interval', () => {
    const cadence = receiptCadence(networks.base);
    for (let i = 0; i < 10; i++) cadence.observe(1);
    for (let i = 0; i < 10; i++) cadence.observe(2000);
    assert.equal(cadence.pollMs(), 250);
    for (let i = 0; i < 10; i++) cadence.observe(60_000);
    assert.equal(cadence.pollMs(), 250, 'bounded by receiptPollingMs');
  });

  test('a node with 200 ms blocks (transactions in about 100 ms) is polled every 25 ms or so', () => {
    const cadence = receiptCadence(networks.base);
    for (let i = 0; i < 20; i++) cadence.observe(100);
    assert.ok(Math.abs(cadence.pollMs() - 25) < 1, `polls every ${cadence.pollMs()} ms`);
  });
});
