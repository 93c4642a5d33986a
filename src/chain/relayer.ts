import {
  type Address,
  type Hex,
  type PublicClient,
  type TransactionSerializableEIP1559,
  BaseError,
  bytesToHex,
  encodeFunctionData,
  hexToBytes,
  keccak256,
  serializeTransaction,
} from 'viem';
import { type PrivateKeyAccount, privateKeyToAccount } from 'viem/accounts';
import { multicall3Abi } from '../../contracts-abi/multicall3.js';
import { MULTICALL3, type Network } from './networks.js';
import { nativeSecp256k1 } from './secp256k1.js';

/** A transaction signed and ready to broadcast; its hash is known before anyone sees it. */
export type SignedTransaction = { relayer: Address; nonce: number; rawTx: Hex; txHash: Hex };

type Call = { to: Address; data: Hex };
type Queued = Call & {
  beforeBroadcast: (tx: SignedTransaction) => Promise<void>;
  resolve(tx: SignedTransaction): void;
  reject(error: unknown): void;
};

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
  key: Hex;
  /** Next nonce to use; unknown until the node is asked, and again after the node disagreed. */
  nonce?: number;
  /** Calls waiting for the lane; taken all at once when the lane is free. */
  queue: Queued[];
  busy: boolean;
};

export type RelayerPoolOptions = {
  keys: readonly Hex[];
  client: PublicClient;
  network: Network;
  /** Gas limit per call. EIP-3009 with the bytes overload uses ~86k, +17k to a new holder, more
   * for a smart-wallet signature; unused gas is not charged. */
  gasPerCall?: bigint;
  /** Most calls one transaction carries. */
  maxBatch?: number;
  /**
   * Whether this instance may still send with these keys (it holds their leases): asked before each
   * new transaction is signed. Once not, nothing new is signed: another instance may be sending
   * with the same keys and nonces. Always, by default.
   */
  mayAct?: () => boolean;
};

/**
 * Relayer keys, each with a send queue: nonce, fees and gas are filled locally (no estimate per
 * call), and each key's transactions reach the node in nonce order, so none waits behind a gap.
 *
 * Group commit: while a key's transaction is on its way, calls for that key queue up, and the
 * next transaction carries all of them at once through Multicall3's `aggregate3` (each call
 * allowed to fail on its own). At low load every call is its own transaction; under load one
 * transaction (and one block slot, one 21k base cost) settles many.
 *
 * @example
 * const pool = createRelayerPool({ keys, client, network });
 * const tx = await pool.submit({ to: usdc, data }, (tx) => journal.recordTransaction(key, tx));
 */
export function createRelayerPool(options: RelayerPoolOptions) {
  const { client, network } = options;
  const gasPerCall = options.gasPerCall ?? 250_000n;
  const maxBatch = options.maxBatch ?? 64;
  const lanes: Lane[] = options.keys.map((key) => ({ account: privateKeyToAccount(key), key, queue: [], busy: false }));
  if (lanes.length === 0) throw new Error('a relayer pool needs at least one key');

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

  async function sign(lane: Lane, calls: Call[]): Promise<SignedTransaction> {
    if (options.mayAct && !options.mayAct()) throw new Error('this instance lost the lease on its relayer keys and is stopping');
    const [fee, nonce] = await Promise.all([
      currentFees(),
      lane.nonce ?? client.getTransactionCount({ address: lane.account.address, blockTag: 'pending' }),
    ]);
    const [one] = calls;
    const call =
      calls.length === 1 && one
        ? one
        : {
            to: MULTICALL3,
            data: encodeFunctionData({
              abi: multicall3Abi,
              functionName: 'aggregate3',
              args: [calls.map((c) => ({ target: c.to, allowFailure: true, callData: c.data }))],
            }),
          };
    const gas = gasPerCall * BigInt(calls.length);
    const rawTx = await signTransaction(lane, { chainId: network.chainId, type: 'eip1559', ...call, nonce, gas, ...fee });
    return { relayer: lane.account.address, nonce, rawTx, txHash: keccak256(rawTx) };
  }

  /** Sends everything queued on a lane, one transaction at a time, until the queue is empty. */
  async function drain(lane: Lane) {
    lane.busy = true;
    while (lane.queue.length > 0) {
      const batch = lane.queue.splice(0, maxBatch);
      let tx: SignedTransaction;
      try {
        tx = await sign(lane, batch);
        for (const item of batch) await item.beforeBroadcast(tx);
      } catch (error) {
        // Nothing was sent: no nonce used, and every caller may give its claim back.
        const refused = new BroadcastRejectedError(`not sent: ${error instanceof Error ? error.message : String(error)}`, 'other');
        for (const item of batch) item.reject(refused);
        continue;
      }
      try {
        await broadcast(client, tx);
        lane.nonce = tx.nonce + 1;
        for (const item of batch) item.resolve(tx);
      } catch (error) {
        if (error instanceof BroadcastRejectedError) lane.nonce = error.kind === 'nonce' ? undefined : tx.nonce;
        else lane.nonce = tx.nonce + 1; // may have arrived, so its nonce counts as used
        for (const item of batch) item.reject(error);
      }
    }
    lane.busy = false;
  }

  return {
    addresses: lanes.map((l) => l.account.address),

    /**
     * Queues a call on the least busy key. `beforeBroadcast` runs once the transaction carrying
     * it is signed and before anyone sees it (the journal write that makes a crash recoverable).
     * A refusal by the node, or a failure before the broadcast, rejects with
     * BroadcastRejectedError and uses up no nonce; a transport failure is rethrown as is (the
     * transaction may have arrived).
     */
    submit(call: Call, beforeBroadcast: (tx: SignedTransaction) => Promise<void>): Promise<SignedTransaction> {
      const lane = lanes.reduce((a, b) => (b.queue.length + Number(b.busy) < a.queue.length + Number(a.busy) ? b : a));
      return new Promise((resolve, reject) => {
        lane.queue.push({ ...call, beforeBroadcast, resolve, reject });
        if (!lane.busy) void drain(lane);
      });
    },

    /** Re-sends an already signed transaction (same hash), e.g. after a crash. */
    rebroadcast: (tx: SignedTransaction) => broadcast(client, tx),
  };
}

/** "Already known" is success: it is in the mempool. */
async function broadcast(client: PublicClient, tx: SignedTransaction): Promise<void> {
  try {
    await client.sendRawTransaction({ serializedTransaction: tx.rawTx });
  } catch (error) {
    const text = error instanceof BaseError ? `${error.shortMessage} ${error.details ?? ''}` : String(error);
    if (/already known|known transaction|already imported/i.test(text)) return;
    if (/HTTP request failed|fetch failed|timed? ?out|ECONNREFUSED|ECONNRESET|socket/i.test(text)) throw error;
    const kind = /nonce too low|nonce.*already used|replacement transaction/i.test(text)
      ? 'nonce'
      : /insufficient funds/i.test(text)
        ? 'funds'
        : 'other';
    throw new BroadcastRejectedError(text.trim(), kind);
  }
}

/** viem's serialization; the signature from libsecp256k1 when the addon is there, else viem's. */
async function signTransaction(lane: Lane, tx: TransactionSerializableEIP1559): Promise<Hex> {
  if (!nativeSecp256k1) return lane.account.signTransaction(tx);
  const digest = hexToBytes(keccak256(serializeTransaction(tx)));
  const { signature, recid } = nativeSecp256k1.ecdsaSign(digest, hexToBytes(lane.key));
  return serializeTransaction(tx, {
    r: bytesToHex(signature.subarray(0, 32)),
    s: bytesToHex(signature.subarray(32, 64)),
    yParity: recid,
  });
}

export type RelayerPool = ReturnType<typeof createRelayerPool>;
