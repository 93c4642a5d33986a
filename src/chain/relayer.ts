import {
  type Address,
  type Hex,
  type PublicClient,
  type TransactionSerializableEIP1559,
  BaseError,
  bytesToHex,
  encodeFunctionData,
  hexToBytes,
  isAddressEqual,
  keccak256,
  parseTransaction,
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

/** A nonce of the lane's whose transaction was given up unmined (see `fillGap`), waiting for the lane. */
type Gap = {
  given: Pick<SignedTransaction, 'nonce' | 'rawTx'>;
  resolve(tx: SignedTransaction | undefined): void;
  reject(error: unknown): void;
};

type Lane = {
  account: PrivateKeyAccount;
  key: Hex;
  /** Next nonce to use; unknown until the node is asked, and again after the node disagreed. */
  nonce?: number;
  /** Calls waiting for the lane; taken all at once when the lane is free. */
  queue: Queued[];
  /** Gaps to fill, each before the lane's next transaction. */
  gaps: Gap[];
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
 * call), and each key's transactions reach the node in nonce order, so none waits behind a gap;
 * one that never reached it and is given up unmined has its nonce taken by a no-op (`fillGap`).
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
  const lanes: Lane[] = options.keys.map((key) => ({ account: privateKeyToAccount(key), key, queue: [], gaps: [], busy: false }));
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

  const refuseOnceLeaseLost = () => {
    if (options.mayAct && !options.mayAct()) throw new Error('this instance lost the lease on its relayer keys and is stopping');
  };

  async function sign(lane: Lane, calls: Call[]): Promise<SignedTransaction> {
    refuseOnceLeaseLost();
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

  /**
   * Uses up `given.nonce` with a no-op (0 ETH to the lane's own address, 21k gas) if the
   * node has nothing there: no transaction mined with it, none pending up to it. Priced at least
   * 1/8 over `given` (every node's replacement bump), so that `given`, wherever it still is, is
   * replaced, and never mined once the no-op is. Nothing when the lane has not counted past it (its
   * next transaction asks the node, and takes that nonce itself). Runs on the lane, between two of
   * its transactions.
   *
   * @example await fill(lane, { nonce: 7, rawTx }) // the no-op at nonce 7, or undefined: 7 is used
   */
  async function fill(lane: Lane, given: Gap['given']): Promise<SignedTransaction | undefined> {
    if (lane.nonce === undefined || lane.nonce <= given.nonce) return undefined;
    const address = lane.account.address;
    const [fee, pending] = await Promise.all([currentFees(), client.getTransactionCount({ address, blockTag: 'pending' })]);
    if (pending > given.nonce) return undefined;
    refuseOnceLeaseLost();
    const before = parseTransaction(given.rawTx);
    const above = (now: bigint, then = 0n) => (then + then / 8n + 1n > now ? then + then / 8n + 1n : now);
    const rawTx = await signTransaction(lane, {
      chainId: network.chainId,
      type: 'eip1559',
      to: address,
      value: 0n,
      nonce: given.nonce,
      gas: 21_000n,
      maxFeePerGas: above(fee.maxFeePerGas, before.maxFeePerGas),
      maxPriorityFeePerGas: above(fee.maxPriorityFeePerGas, before.maxPriorityFeePerGas),
    });
    const tx = { relayer: address, nonce: given.nonce, rawTx, txHash: keccak256(rawTx) };
    try {
      await broadcast(client, tx);
    } catch (error) {
      // Used since the look, or the node holds a transaction there already: no gap.
      if (error instanceof BroadcastRejectedError && error.kind === 'nonce') return undefined;
      throw error;
    }
    return tx;
  }

  /** Sends everything queued on a lane, one transaction at a time (gaps filled first), until the queue is empty. */
  async function drain(lane: Lane) {
    lane.busy = true;
    while (lane.queue.length > 0 || lane.gaps.length > 0) {
      const gap = lane.gaps.shift();
      if (gap) {
        await fill(lane, gap.given).then(gap.resolve, gap.reject);
        continue;
      }
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

    /**
     * Makes sure the nonce of `given`, a transaction of one of these keys that the journal gives up
     * unmined, does not stay a gap: every later transaction of that key would wait behind it,
     * never mined. If the node has nothing at that nonce, a no-op takes it (see `fill`) and is
     * returned, sent (not mined yet); undefined when there is no gap to fill, or the key is not
     * one of this pool's (another instance's: its own pool takes the nonce when it next asks the
     * node). Refusals and transport failures reject, as `submit`'s do.
     *
     * @example const noop = await pool.fillGap(givenUp); // its receipt mined: givenUp never can be
     */
    fillGap(given: Pick<SignedTransaction, 'relayer' | 'nonce' | 'rawTx'>): Promise<SignedTransaction | undefined> {
      const lane = lanes.find((l) => isAddressEqual(l.account.address, given.relayer));
      if (!lane) return Promise.resolve(undefined);
      return new Promise((resolve, reject) => {
        lane.gaps.push({ given, resolve, reject });
        if (!lane.busy) void drain(lane);
      });
    },
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
