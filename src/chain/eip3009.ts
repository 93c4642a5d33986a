import type { Address, TypedDataDomain } from 'viem';
import type { Network } from './networks.js';

/** EIP-712 types of an EIP-3009 `transferWithAuthorization`, the only message x402 `exact` signs on EVM. */
export const transferWithAuthorizationTypes = {
  TransferWithAuthorization: [
    { name: 'from', type: 'address' },
    { name: 'to', type: 'address' },
    { name: 'value', type: 'uint256' },
    { name: 'validAfter', type: 'uint256' },
    { name: 'validBefore', type: 'uint256' },
    { name: 'nonce', type: 'bytes32' },
  ],
} as const;

/**
 * The EIP-712 domain of a network's USDC, from the registry.
 *
 * @example usdcDomain(networks.base) // { name: 'USD Coin', version: '2', chainId: 8453, verifyingContract: '0x8335…' }
 */
export function usdcDomain(network: Network): TypedDataDomain & { verifyingContract: Address } {
  return {
    name: network.usdc.name,
    version: network.usdc.version,
    chainId: network.chainId,
    verifyingContract: network.usdc.address,
  };
}
