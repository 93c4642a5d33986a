import { x402Client } from '@x402/core/client';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { type Address, createPublicClient, createWalletClient, http, parseEther, parseGwei } from 'viem';
import { usdcAbi } from '../../contracts-abi/usdc.js';
import { networks } from '../../src/chain/networks.js';
import type { DemoAccount } from '../../src/chain/sandbox/accounts.js';
import type { Sandbox } from '../../src/chain/sandbox/sandbox.js';
import { type Call, delivered } from './calls.js';
import { callBody, challengeFor, performCall } from './payers.js';
import { seededRandom } from './rng.js';

/** Where a drainer's USDC goes: no payee, no payer. */
export const DRAIN_SINK: Address = '0x000000000000000000000000000000000000dEaD';
/** Concurrent paid calls a drainer sends before it empties its wallet: more than the cap defers. */
const BURST = 8;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What a drainer did: its calls, when it emptied its wallet, and its last call after that. */
export type Drain = { payer: string; drainedAt?: number; probe?: Call };

/**
 * Payers who cheat deferred settlement (`--settlement deferred`): each makes a few honest paid
 * calls, then sends a burst of concurrent paid calls and, as soon as the first result is back,
 * empties its wallet with a transfer of its own at a fee that puts it ahead of the settlements in
 * the next block. Their deferred payments then fail on chain: losses, which the cap bounds. Once
 * the block is in, one more paid call must be refused (`payer_has_unsettled_losses`) when a loss
 * was recorded.
 */
export async function runDrainers(options: {
  mcpUrl: string;
  sandbox: Sandbox;
  seed: number;
  payers: DemoAccount[];
  running: () => boolean;
}): Promise<{ calls: Call[]; drains: Drain[] }> {
  const calls: Call[] = [];
  const drains: Drain[] = [];
  const required = await challengeFor(options.mcpUrl);
  const to = { mcpUrl: options.mcpUrl, calls };

  async function drainer(payer: DemoAccount, index: number) {
    const random = seededRandom(options.seed * 1000 + 900 + index);
    const client = new x402Client().register('eip155:8453', new ExactEvmScheme(payer));
    const address = payer.address.toLowerCase();
    const drain: Drain = { payer: address };
    drains.push(drain);
    let n = 0;
    const paidCall = async (prefix: string) => {
      const payment = await client.createPaymentPayload(required);
      const nonce = (payment.payload as { authorization: { nonce: string } }).authorization.nonce.toLowerCase();
      const call: Call = { callId: `${prefix}${index}-${n++}`, rail: 'x402', tool: 'ok', payer: address, nonce, rounds: [] };
      return { call, run: () => performCall(to, call, callBody(call.callId, 'ok', payment), {}, random) };
    };
    await sleep(random.int(500, 3000));
    for (let i = random.int(1, 3); i > 0 && options.running(); i--) await (await paidCall('d')).run();
    if (!options.running()) return;
    const burst = await Promise.all(Array.from({ length: BURST }, () => paidCall('d')));
    let drained: Promise<void> | undefined;
    await Promise.all(
      burst.map(async ({ call, run }) => {
        await run();
        if (delivered(call).length > 0) drained ??= emptyWallet(options.sandbox, payer).then(() => void (drain.drainedAt = Date.now()));
      }),
    );
    await drained;
    // The settlements' block, and the receipts of the failed ones, then one more call.
    await sleep(5000);
    const probe = await paidCall('p');
    drain.probe = probe.call;
    await probe.run();
  }

  await Promise.all(options.payers.map(drainer));
  return { calls, drains };
}

/** Sends all of `payer`'s USDC to DRAIN_SINK from the payer's own account (given gas for it), at a high priority fee. */
async function emptyWallet(sandbox: Sandbox, payer: DemoAccount) {
  const rpc = (method: string, params: unknown[]) =>
    fetch(sandbox.rpcUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
    });
  await rpc('anvil_setBalance', [payer.address, `0x${parseEther('1').toString(16)}`]);
  const wallet = createWalletClient({ account: payer, chain: networks.local.viemChain, transport: http(sandbox.rpcUrl) });
  const balance = await createPublicClient({ transport: http(sandbox.rpcUrl) }).readContract({
    address: sandbox.usdc,
    abi: usdcAbi,
    functionName: 'balanceOf',
    args: [payer.address],
  });
  await wallet.writeContract({
    address: sandbox.usdc,
    abi: usdcAbi,
    functionName: 'transfer',
    args: [DRAIN_SINK, balance],
    gas: 100_000n,
    maxFeePerGas: parseGwei('500'),
    maxPriorityFeePerGas: parseGwei('400'),
  });
}
