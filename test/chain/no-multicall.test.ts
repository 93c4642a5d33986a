import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { type Hex, createPublicClient, createTestClient, http } from 'viem';
import { multicall3DeployedBytecode } from '../../contracts-abi/multicall3.js';
import { connectChain } from '../../src/chain/connect.js';
import { BASE_USDC, MULTICALL3 } from '../../src/chain/networks.js';
import { type Sandbox, startSandbox } from '../../src/chain/sandbox/sandbox.js';
import { loadConfig } from '../../src/config/load.js';
import { purposes } from '../../src/facilitator/purposes.js';
import { openFacilitator } from '../../src/app/payments.js';
import { createLogger } from '../../src/log/logger.js';
import { v2Request } from '../helpers/payments.js';

let sandbox: Sandbox;
const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-no-multicall-'));
before(async () => {
  sandbox = await startSandbox({ multicall3: false });
});
after(async () => {
  await sandbox.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** `turnpike facilitator --network base --rpc-url <the node>`, as the command opens it, its log kept. */
async function facilitatorOnNode(name: string) {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const store = { url: `sqlite:${path.join(dir, `${name}.db`)}` };
  const config = loadConfig({ env: {}, overrides: { network: 'base', rpcUrl: sandbox.rpcUrl, store } });
  const relayerKeys = sandbox.accounts.relayers.map((r) => r.privateKey);
  const chain = await connectChain({ network: 'base', rpcUrl: sandbox.rpcUrl, relayerKeys });
  const opened = await openFacilitator({ config, chain, logger: createLogger({ level: 'info', format: 'json' }, sink) });
  return { chain, ...opened, lines };
}

const payment = (payer: number, amount = 10_000n) =>
  v2Request({ payer: sandbox.accounts.payers[payer]!, payTo: sandbox.accounts.payees[0]!.address, amount });

describe('a node without Multicall3 (an anvil with USDC and nothing at 0xcA11…)', () => {
  test('start-up finds no Multicall3 and says so; verification answers from plain eth_calls', async () => {
    const { chain, facilitator, lines, close } = await facilitatorOnNode('verify');
    assert.equal(chain.multicall3, false);
    assert.ok(
      lines.some((l) => /no Multicall3 on the node/.test(String(l.msg))),
      JSON.stringify(lines),
    );
    const good = await facilitator.verify(await payment(0), purposes.api);
    assert.deepEqual(good, { isValid: true, payer: sandbox.accounts.payers[0]!.address });
    const short = await facilitator.verify(await payment(1, 20_000_000_000n), purposes.api);
    assert.equal(short.isValid ? undefined : short.invalidReason, 'invalid_exact_evm_insufficient_balance');
    await close();
  });

  test('concurrent settlements each get a transaction of their own to USDC, and all succeed', async () => {
    const { facilitator, close } = await facilitatorOnNode('settle');
    const bodies = await Promise.all([2, 3, 4].map((p) => payment(p)));
    const receipts = await Promise.all(bodies.map((b) => facilitator.settle(b, purposes.api)));
    assert.deepEqual(
      receipts.map((r) => r.success),
      [true, true, true],
      JSON.stringify(receipts),
    );
    assert.equal(new Set(receipts.map((r) => r.transaction)).size, 3);
    const client = createPublicClient({ transport: http(sandbox.rpcUrl) });
    for (const r of receipts) {
      const tx = await client.getTransaction({ hash: r.transaction as Hex });
      assert.equal(tx.to?.toLowerCase(), BASE_USDC.toLowerCase());
    }
    await close();
  });

  test('once Multicall3 is on the node, the next start-up finds it and batches again', async () => {
    const anvil = createTestClient({ mode: 'anvil', transport: http(sandbox.rpcUrl) });
    await anvil.setCode({ address: MULTICALL3, bytecode: multicall3DeployedBytecode });
    const { chain, facilitator, lines, close } = await facilitatorOnNode('with');
    assert.equal(chain.multicall3, true);
    assert.ok(lines.some((l) => /^Multicall3 on the node/.test(String(l.msg))));
    assert.equal((await facilitator.verify(await payment(5), purposes.api)).isValid, true);
    await close();
  });
});
