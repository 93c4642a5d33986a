import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createWalletClient, http } from 'viem';
import { networks } from '../../src/chain/networks.js';
import { receiptCadence, sleep } from '../../src/chain/receipts.js';
import { useSandbox } from '../helpers/chain.js';

const chain = useSandbox();

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

describe('receipt cadence on a chain with a block clock (anvil mining every second)', () => {
  test('once it has seen a block arrive, a receipt is seen within a few tens of ms of its block, not up to a polling interval later', async () => {
    const cadence = receiptCadence({ blockTimeMs: 1000, receiptPollingMs: 250 });
    const sender = createWalletClient({
      account: chain.sandbox.accounts.relayers[0]!,
      chain: networks.local.viemChain,
      transport: http(chain.sandbox.rpcUrl),
    });
    // When each block shows up on the node, looked for every 2 ms.
    const arrivals = new Map<bigint, number>();
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const n = await chain.client.getBlockNumber({ cacheTime: 0 });
        if (!arrivals.has(n)) arrivals.set(n, performance.now());
        await sleep(2);
      }
    })();
    await chain.rpc('evm_setIntervalMining', [1]);
    const lags: number[] = [];
    try {
      for (let i = 0; i < 6; i++) {
        await sleep(Math.random() * 1000);
        const hash = await sender.sendTransaction({ to: sender.account.address, value: 0n });
        const receipt = await cadence.waitFor(chain.client, hash, Date.now() + 5000, performance.now());
        const seen = performance.now();
        assert.ok(receipt);
        const arrived = arrivals.get(receipt.blockNumber);
        if (i >= 2 && arrived !== undefined) lags.push(seen - arrived);
      }
    } finally {
      watching = false;
      await watcher;
      await chain.rpc('evm_setAutomine', [true]);
    }
    assert.ok(lags.length >= 2, `lags ${lags} arrivals ${[...arrivals.keys()]}`);
    for (const lag of lags) assert.ok(lag < 60, `seen ${lag.toFixed(1)} ms after its block (lags ${lags.map((l) => l.toFixed(1))})`);
  });
});
