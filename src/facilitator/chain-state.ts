import { type Hex, type PublicClient, parseAbi } from 'viem';
import { usdcAbi } from '../../contracts-abi/usdc.js';
import { MULTICALL3 } from '../chain/networks.js';
import { FacilitatorUnavailableError } from './errors.js';
import type { PaymentIntent } from './intent.js';

const erc1271Abi = parseAbi(['function isValidSignature(bytes32 hash, bytes signature) view returns (bytes4)']);
const ERC1271_MAGIC = '0x1626ba7e';

export type PaymentChainState = { nonceUsed: boolean; balance: bigint; walletApproves?: boolean };

/**
 * Everything verification needs from the chain in one `eth_call` through Multicall3: whether the
 * nonce is used, the payer's balance, and, for a smart-wallet signature, the wallet's ERC-1271
 * verdict (an EOA "answers" with empty data, which counts as no).
 */
export async function readPaymentState(
  client: PublicClient,
  intent: PaymentIntent,
  wallet?: { digest: Hex },
): Promise<PaymentChainState> {
  const { from, nonce } = intent.authorization;
  const token = intent.asset.address;
  const reads = [
    { address: token, abi: usdcAbi, functionName: 'authorizationState', args: [from, nonce] },
    { address: token, abi: usdcAbi, functionName: 'balanceOf', args: [from] },
  ] as const;
  const options = { multicallAddress: MULTICALL3, allowFailure: true } as const;
  let results;
  try {
    results = wallet
      ? await client.multicall({
          ...options,
          contracts: [
            ...reads,
            { address: from, abi: erc1271Abi, functionName: 'isValidSignature', args: [wallet.digest, intent.signature] },
          ],
        })
      : await client.multicall({ ...options, contracts: reads });
  } catch (error) {
    throw new FacilitatorUnavailableError('cannot read payment state from the chain', { cause: error });
  }
  const [used, balance, verdict] = results;
  if (used.status !== 'success' || balance.status !== 'success') {
    throw new FacilitatorUnavailableError(`asset ${token} did not answer authorizationState/balanceOf`);
  }
  return {
    nonceUsed: used.result,
    balance: balance.result,
    ...(wallet ? { walletApproves: verdict?.status === 'success' && verdict.result === ERC1271_MAGIC } : {}),
  };
}
