import {
  type Address,
  type Hex,
  concat,
  hashDomain,
  hashStruct,
  hexToBigInt,
  hexToBytes,
  keccak256,
  recoverAddress,
  size,
  slice,
} from 'viem';
import { transferWithAuthorizationTypes } from '../chain/eip3009.js';
import { nativeSecp256k1 as native } from '../chain/secp256k1.js';
import type { PaymentIntent } from './intent.js';

const ERC6492_MAGIC = '6492649264926492649264926492649264926492649264926492649264926492';
const HALF_CURVE_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0n;

const domainTypes = {
  EIP712Domain: [
    { name: 'name', type: 'string' },
    { name: 'version', type: 'string' },
    { name: 'chainId', type: 'uint256' },
    { name: 'verifyingContract', type: 'address' },
  ],
} as const;
const domainSeparators = new Map<string, Hex>();

/**
 * The EIP-712 digest the token checks: the same for an EOA's ECDSA and a wallet's ERC-1271.
 * viem's hashTypedData, less the two parts that cost the most and never change per call: the
 * domain separator is hashed once per asset, and the field validation is zod's, already done.
 */
export function authorizationDigest(intent: PaymentIntent, chainId: number): Hex {
  const { asset } = intent;
  const cacheKey = `${chainId}:${asset.address}:${asset.name}:${asset.version}`;
  let separator = domainSeparators.get(cacheKey);
  if (!separator) {
    const domain = { name: asset.name, version: asset.version, chainId: BigInt(chainId), verifyingContract: asset.address };
    separator = hashDomain({ domain, types: domainTypes });
    domainSeparators.set(cacheKey, separator);
  }
  const struct = hashStruct({
    data: intent.authorization,
    primaryType: 'TransferWithAuthorization',
    types: transferWithAuthorizationTypes,
  });
  return keccak256(concat(['0x1901', separator, struct]));
}

/**
 * The address (lower-case) a 65-byte signature recovers to, under the token's own rules (FiatToken's
 * ECRecover): v must be 27 or 28 and s in the lower half of the curve order. A signature the
 * token would refuse recovers to nobody here, so verify and the chain agree.
 */
async function recoverSigner(digest: Hex, signature: Hex): Promise<Address | undefined> {
  const bytes = hexToBytes(signature);
  const v = bytes[64]!;
  if ((v !== 27 && v !== 28) || hexToBigInt(slice(signature, 32, 64)) > HALF_CURVE_ORDER) return undefined;
  try {
    if (!native) return (await recoverAddress({ hash: digest, signature })).toLowerCase() as Address;
    const publicKey = native.ecdsaRecover(bytes.subarray(0, 64), v - 27, hexToBytes(digest), false);
    return slice(keccak256(publicKey.subarray(1)), 12);
  } catch {
    return undefined;
  }
}

/**
 * What a signature can be, from its bytes alone: an ERC-6492 wrapper (a wallet not deployed yet,
 * refused: settling it would mean deploying someone's wallet from an unvetted factory), 65 bytes
 * (an EOA's ECDSA if it recovers to the payer; else a smart wallet's), or a smart wallet's
 * ERC-1271 signature, which only the wallet itself can judge.
 */
export function signatureShape(signature: Hex): 'erc6492' | 'ecdsa' | 'contract' {
  if (signature.toLowerCase().endsWith(ERC6492_MAGIC)) return 'erc6492';
  return size(signature) === 65 ? 'ecdsa' : 'contract';
}

/** Classifies a signature without touching the chain: `eoa` only if it recovers to the payer. */
export async function classifySignature(intent: PaymentIntent, digest: Hex): Promise<'eoa' | 'erc6492' | 'contract'> {
  const shape = signatureShape(intent.signature);
  if (shape !== 'ecdsa') return shape;
  return (await recoverSigner(digest, intent.signature)) === intent.key.payer ? 'eoa' : 'contract';
}
