import {
  BaseError,
  type ContractFunctionParameters,
  ContractFunctionRevertedError,
  ContractFunctionZeroDataError,
  type Hex,
  type PublicClient,
  parseAbi,
} from 'viem';
import { usdcAbi } from '../../contracts-abi/usdc.js';
import { MULTICALL3 } from '../chain/networks.js';
import { FacilitatorUnavailableError } from './errors.js';
import type { PaymentIntent } from './intent.js';

const erc1271Abi = parseAbi(['function isValidSignature(bytes32 hash, bytes signature) view returns (bytes4)']);
const ERC1271_MAGIC = '0x1626ba7e';
/** Payments per aggregate3 (two or three calls each); a larger batch is split. */
const MAX_PAYMENTS = 100;

export type PaymentChainState = { nonceUsed: boolean; balance: bigint; walletApproves?: boolean };
type Result = { status: 'success'; result: unknown } | { status: 'failure'; error: Error };
type Pending = { calls: ContractFunctionParameters[]; resolve(results: Result[]): void; reject(error: unknown): void };

/**
 * Reads what verification needs from the chain: whether the nonce is used, the payer's balance
 * and, for a smart-wallet signature, the wallet's ERC-1271 verdict (an EOA "answers" with empty
 * data, which counts as no).
 *
 * Reads requested in the same turn of the event loop share one Multicall3 `eth_call`: at
 * concurrency 16 that is one RPC round trip for sixteen verifications instead of sixteen. On a
 * node without Multicall3 (`multicall3: false`) each is a plain `eth_call`, sent together.
 *
 * @example
 * const read = createStateReader(client);
 * const { nonceUsed, balance } = await read(intent);
 */
export function createStateReader(client: PublicClient, options: { multicall3?: boolean } = {}) {
  let queue: Pending[] = [];
  const read = (contracts: ContractFunctionParameters[]) =>
    options.multicall3 === false
      ? readEach(client, contracts)
      : (client.multicall({ multicallAddress: MULTICALL3, allowFailure: true, contracts }) as Promise<Result[]>);

  async function flush(batch: Pending[]) {
    const contracts = batch.flatMap((p) => p.calls);
    try {
      const results = await read(contracts);
      let offset = 0;
      for (const p of batch) {
        p.resolve(results.slice(offset, offset + p.calls.length));
        offset += p.calls.length;
      }
    } catch (error) {
      const unavailable = new FacilitatorUnavailableError('cannot read payment state from the chain', { cause: error });
      for (const p of batch) p.reject(unavailable);
    }
  }

  const enqueue = (calls: ContractFunctionParameters[]) =>
    new Promise<Result[]>((resolve, reject) => {
      if (queue.length === 0) {
        setImmediate(() => {
          const all = queue;
          queue = [];
          for (let i = 0; i < all.length; i += MAX_PAYMENTS) void flush(all.slice(i, i + MAX_PAYMENTS));
        });
      }
      queue.push({ calls, resolve, reject });
    });

  return async function readPaymentState(intent: PaymentIntent, wallet?: { digest: Hex }): Promise<PaymentChainState> {
    const { from, nonce } = intent.authorization;
    const token = intent.asset.address;
    const [used, balance, verdict] = await enqueue([
      { address: token, abi: usdcAbi, functionName: 'authorizationState', args: [from, nonce] },
      { address: token, abi: usdcAbi, functionName: 'balanceOf', args: [from] },
      ...(wallet ? [{ address: from, abi: erc1271Abi, functionName: 'isValidSignature', args: [wallet.digest, intent.signature] }] : []),
    ]);
    if (used?.status !== 'success' || balance?.status !== 'success') {
      throw new FacilitatorUnavailableError(`asset ${token} did not answer authorizationState/balanceOf`);
    }
    return {
      nonceUsed: used.result as boolean,
      balance: balance.result as bigint,
      ...(wallet ? { walletApproves: verdict?.status === 'success' && verdict.result === ERC1271_MAGIC } : {}),
    };
  };
}

export type StateReader = ReturnType<typeof createStateReader>;

/**
 * The calls as plain `eth_call`s, outcomes as Multicall3's `allowFailure` reports them: a call the
 * contract reverted or answered with nothing fails alone; the node itself failing fails the batch.
 */
async function readEach(client: PublicClient, contracts: ContractFunctionParameters[]): Promise<Result[]> {
  const settled = await Promise.allSettled(contracts.map((c) => client.readContract(c)));
  return settled.map((s) => {
    if (s.status === 'fulfilled') return { status: 'success', result: s.value };
    const contractAnswered = (e: unknown) => e instanceof ContractFunctionRevertedError || e instanceof ContractFunctionZeroDataError;
    const answered = s.reason instanceof BaseError && s.reason.walk(contractAnswered);
    if (!answered) throw s.reason;
    return { status: 'failure', error: s.reason as Error };
  });
}
