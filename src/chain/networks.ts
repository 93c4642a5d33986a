import { getAddress, type Address, type Chain } from 'viem';
import { base, baseSepolia } from 'viem/op-stack';

/** Names accepted for `--network` and `network` in the config file. */
export const networkNames = ['base', 'base-sepolia', 'local'] as const;
export type NetworkName = (typeof networkNames)[number];

/**
 * Everything turnpike needs to know about a chain it settles on.
 *
 * `usdc.name`/`usdc.version` are the token's EIP-712 domain: a wrong name only shows up as an
 * invalid signature, so they live here, next to the address they belong to.
 */
export type Network = {
  name: NetworkName;
  chainId: number;
  /** CAIP-2 id, the x402 v2 network identifier. */
  caip2: `eip155:${number}`;
  /** x402 v1 network name. */
  x402v1: string;
  usdc: { address: Address; name: string; version: string; decimals: 6 };
  /** Default public RPC; `local` has none (the sandbox hands out its own URL). */
  defaultRpcUrl?: string;
  /** Block time; fee estimates are reused for one block. */
  blockTimeMs: number;
  /** How often to poll for a receipt: a fraction of the block time, so we notice a block quickly. */
  receiptPollingMs: number;
  /** viem chain definition (fees, block explorers, formatters). */
  viemChain: Chain;
};

/** Base mainnet's USDC (Circle FiatTokenV2_2 behind a proxy); the sandbox puts the same code here. */
export const BASE_USDC: Address = getAddress('0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913');
export const BASE_SEPOLIA_USDC: Address = getAddress('0x036CbD53842c5426634e7929541eC2318f3dCF7e');
/** Multicall3's canonical address, deployed on Base and planted by the sandbox. */
export const MULTICALL3: Address = getAddress('0xcA11bde05977b3631167028862bE2a173976CA11');

const baseNetwork: Network = {
  name: 'base',
  chainId: 8453,
  caip2: 'eip155:8453',
  x402v1: 'base',
  usdc: { address: BASE_USDC, name: 'USD Coin', version: '2', decimals: 6 },
  defaultRpcUrl: 'https://mainnet.base.org',
  blockTimeMs: 2000,
  receiptPollingMs: 250,
  viemChain: base,
};

export const networks: Readonly<Record<NetworkName, Network>> = {
  base: baseNetwork,
  'base-sepolia': {
    name: 'base-sepolia',
    chainId: 84532,
    caip2: 'eip155:84532',
    x402v1: 'base-sepolia',
    usdc: { address: BASE_SEPOLIA_USDC, name: 'USDC', version: '2', decimals: 6 },
    defaultRpcUrl: 'https://sepolia.base.org',
    blockTimeMs: 2000,
    receiptPollingMs: 250,
    viemChain: baseSepolia,
  },
  // The sandbox is Base as far as any signature can tell: same chain id, same USDC address and
  // domain. Only the polling differs, because anvil automines in a few milliseconds.
  local: { ...baseNetwork, name: 'local', defaultRpcUrl: undefined, blockTimeMs: 1000, receiptPollingMs: 5 },
};

/**
 * Finds a network by any of the ids x402 uses for it: CAIP-2 (`eip155:8453`) or v1 name (`base`).
 * `local` answers to Base's ids, so when both are configured the caller decides which one it runs.
 *
 * @example findNetwork('eip155:84532')?.name // 'base-sepolia'
 */
export function findNetwork(id: string): Network | undefined {
  return Object.values(networks).find((n) => n.caip2 === id || n.x402v1 === id);
}
