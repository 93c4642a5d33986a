import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, beforeEach } from 'node:test';
import { type Address, type Hex, type PublicClient, createPublicClient } from 'viem';
import { usdcAbi } from '../../contracts-abi/usdc.js';
import { BASE_USDC, networks } from '../../src/chain/networks.js';
import { rpcTransport } from '../../src/chain/rpc-transport.js';
import { type Sandbox, startSandbox } from '../../src/chain/sandbox/sandbox.js';
import { createFacilitator } from '../../src/facilitator/facilitator.js';
import { openSqliteStore } from '../../src/store/sqlite.js';

/**
 * One sandbox per test file, reverted to a clean snapshot before each test, plus a scratch
 * directory for stores. Returns getters because the values exist only once `before` has run.
 *
 * `isolate: false` keeps the chain across tests, for files whose relayers live across tests: a
 * revert would rewind the relayers' nonces under their local nonce counters.
 */
export function useSandbox(options: { isolate?: boolean } = {}) {
  let sandbox: Sandbox;
  let client: PublicClient;
  let snapshot: Hex;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-test-'));
  const rpc = <T>(method: string, params: unknown[] = []) =>
    (client.request as (args: { method: string; params: unknown[] }) => Promise<unknown>)({ method, params }) as Promise<T>;

  before(async () => {
    sandbox = await startSandbox();
    client = createPublicClient({ chain: networks.local.viemChain, transport: rpcTransport(sandbox.rpcUrl), pollingInterval: 5 });
    snapshot = await rpc<Hex>('evm_snapshot');
  });
  beforeEach(async () => {
    if (options.isolate === false) return;
    await rpc('evm_revert', [snapshot]);
    snapshot = await rpc<Hex>('evm_snapshot');
  });
  after(async () => {
    await sandbox.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  let n = 0;
  return {
    get sandbox() {
      return sandbox;
    },
    get client() {
      return client;
    },
    rpc,
    /** A fresh SQLite file path for this test. */
    dbPath: () => path.join(dir, `store-${++n}.db`),
    /** A facilitator on this sandbox with a fresh store, settling with the given relayers. */
    async facilitator(relayers: number[]) {
      const store = await openSqliteStore({ path: path.join(dir, `store-${++n}.db`) });
      const facilitator = createFacilitator({
        network: networks.local,
        client,
        journal: store.journal,
        relayerKeys: relayers.map((i) => sandbox.accounts.relayers[i]!.privateKey),
      });
      return { store, facilitator };
    },
    balanceOf: (address: Address) => client.readContract({ address: BASE_USDC, abi: usdcAbi, functionName: 'balanceOf', args: [address] }),
    /** Transactions the relayers have sent so far (sum of their nonces). */
    relayerTxCount: async () => {
      const counts = await Promise.all(
        sandbox.accounts.relayers.map((r) => client.getTransactionCount({ address: r.address, blockTag: 'pending' })),
      );
      return counts.reduce((a, b) => a + b, 0);
    },
  };
}
