import {
  type Address,
  type Hex,
  type PublicClient,
  BaseError,
  keccak256,
} from 'viem';
import { type PrivateKeyAccount, privateKeyToAccount } from 'viem/accounts';
import type { Network } from './networks.js';

/** A transaction signed and ready to broadcast; its hash is known before anyone sees it. */
export type SignedTransaction = { relayer: Address; nonce: number; rawTx: Hex; txHash: Hex };

/** The node answered and refused the transaction: it is not in any mempool. */
export class BroadcastRejectedError extends Error {
  override name = 'BroadcastRejectedError';
  constructor(
    message: string,
    readonly kind: 'nonce' | 'funds' | 'other',
  ) {
    super(message);
  }
}

type Lane = {
  account: PrivateKeyAccount;
  next?: Promise<number>;
  /** Nonces handed out but given back (a refused broadcast): reused first, so no gap stalls the lane. */
  free: number[];
  inFlight: number;
};

export type RelayerPoolOptions = {
  keys: readonly Hex[];
  client: PublicClient;
  network: Network;
  /** Gas limit per settlement. EIP-3009 with the bytes overload uses ~86k, +17k to a new holder,
   * more for a smart-wallet signature; unused gas is not charged. */
  gasLimit?: bigint;
};

/**
 * Relayer keys with local nonce allocation and locally filled gas and fees: signing a settlement
 * costs no RPC round trip, and several keys settle in parallel without `nonce too low`.
 *
 * @example
 * const pool = createRelayerPool({ keys, client, network });
 * const tx = await pool.sign(usdcAddress, calldata);
 * await pool.broadcast(tx);
 */
export function createRelayerPool(options: RelayerPoolOptions) {
  const { client, network } = options;
  const gas = options.gasLimit ?? 250_000n;
  const lanes: Lane[] = options.keys.map((key) => ({ account: privateKeyToAccount(key), free: [], inFlight: 0 }));
  if (lanes.length === 0) throw new Error('a relayer pool needs at least one key');
  const byAddress = new Map(lanes.map((l) => [l.account.address.toLowerCase(), l]));

  let fees: { at: number; value: Promise<{ maxFeePerGas: bigint; maxPriorityFeePerGas: bigint }> } | undefined;
  // Fees move at most once a block; one look-up per block time serves every settlement in it.
  const currentFees = () => {
    const now = Date.now();
    if (!fees || now - fees.at > network.blockTimeMs) {
      const value = client.estimateFeesPerGas({ chain: network.viemChain }).then((f) => ({
        maxFeePerGas: f.maxFeePerGas * 2n,
        maxPriorityFeePerGas: f.maxPriorityFeePerGas,
      }));
      fees = { at: now, value };
      value.catch(() => (fees = undefined));
    }
    return fees.value;
  };

  const allocate = async (lane: Lane): Promise<number> => {
    const reused = lane.free.shift();
    if (reused !== undefined) return reused;
    // Chained promises hand out consecutive nonces even to concurrent callers; a failed chain
    // link resets the lane so the next caller asks the node again.
    const previous =
      lane.next ?? client.getTransactionCount({ address: lane.account.address, blockTag: 'pending' }).then((n) => n - 1);
    const mine = previous.then((n) => n + 1);
    lane.next = mine;
    mine.catch(() => {
      if (lane.next === mine) lane.next = undefined;
    });
    return mine;
  };

  const resync = (lane: Lane) => {
    lane.next = undefined;
    lane.free = [];
  };

  return {
    addresses: lanes.map((l) => l.account.address),

    /** Signs a call from the least busy relayer. */
    async sign(to: Address, data: Hex): Promise<SignedTransaction> {
      const lane = lanes.reduce((a, b) => (b.inFlight < a.inFlight ? b : a));
      lane.inFlight++;
      try {
        const [nonce, fee] = await Promise.all([allocate(lane), currentFees()]);
        const rawTx = await lane.account.signTransaction({
          chainId: network.chainId,
          type: 'eip1559',
          to,
          data,
          nonce,
          gas,
          ...fee,
        });
        return { relayer: lane.account.address, nonce, rawTx, txHash: keccak256(rawTx) };
      } finally {
        lane.inFlight--;
      }
    },

    /**
     * Sends a signed transaction. A refusal by the node throws BroadcastRejectedError (and the
     * nonce goes back to the lane); a transport failure is rethrown as is, since the transaction
     * may have arrived. "Already known" is success: it is in the mempool.
     */
    async broadcast(tx: SignedTransaction): Promise<void> {
      try {
        await client.sendRawTransaction({ serializedTransaction: tx.rawTx });
      } catch (error) {
        const text = error instanceof BaseError ? `${error.shortMessage} ${error.details ?? ''}` : String(error);
        if (/already known|known transaction|already imported/i.test(text)) return;
        const kind = /nonce too low|nonce.*already used|replacement transaction/i.test(text)
          ? 'nonce'
          : /insufficient funds/i.test(text)
            ? 'funds'
            : /HTTP request failed|fetch failed|timed? ?out|ECONNREFUSED|socket/i.test(text)
              ? undefined
              : 'other';
        if (!kind) throw error;
        const lane = byAddress.get(tx.relayer.toLowerCase());
        if (lane && kind === 'nonce') resync(lane);
        else if (lane) lane.free = [...lane.free, tx.nonce].sort((a, b) => a - b);
        throw new BroadcastRejectedError(text.trim(), kind);
      }
    },
  };
}

export type RelayerPool = ReturnType<typeof createRelayerPool>;
