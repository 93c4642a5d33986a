import { type Hex, hashTypedData, recoverAddress, size } from 'viem';
import { transferWithAuthorizationTypes } from '../chain/eip3009.js';
import type { PaymentIntent } from './intent.js';

const ERC6492_MAGIC = '6492649264926492649264926492649264926492649264926492649264926492';

/** The EIP-712 digest the token checks: the same for an EOA's ECDSA and a wallet's ERC-1271. */
export function authorizationDigest(intent: PaymentIntent, chainId: number): Hex {
  return hashTypedData({
    domain: { name: intent.asset.name, version: intent.asset.version, chainId, verifyingContract: intent.asset.address },
    types: transferWithAuthorizationTypes,
    primaryType: 'TransferWithAuthorization',
    message: intent.authorization,
  });
}

/**
 * Classifies a signature without touching the chain: a 65-byte signature that recovers to the
 * payer is settled; an ERC-6492 wrapper (a wallet not deployed yet) is refused, since settling it
 * would mean deploying someone's wallet from an unvetted factory; anything else may be an
 * ERC-1271 smart-wallet signature, which only the wallet itself can judge.
 */
export async function classifySignature(intent: PaymentIntent, digest: Hex): Promise<'eoa' | 'erc6492' | 'contract'> {
  const { signature } = intent;
  if (signature.toLowerCase().endsWith(ERC6492_MAGIC)) return 'erc6492';
  if (size(signature) === 65) {
    try {
      const signer = await recoverAddress({ hash: digest, signature });
      if (signer === intent.authorization.from) return 'eoa';
    } catch {
      // not a valid ECDSA signature; perhaps a wallet's
    }
  }
  return 'contract';
}
