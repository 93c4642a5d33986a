import type { Logger } from 'pino';
import {
  type Hex,
  type PublicClient,
  type TransactionReceipt,
  TransactionReceiptNotFoundError,
  encodeFunctionData,
  isAddressEqual,
  keccak256,
  parseEventLogs,
  parseTransaction,
} from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { usdcAbi } from '../../contracts-abi/usdc.js';
import type { Network } from '../chain/networks.js';
import { sleep, waitForReceipt } from '../chain/receipts.js';
import { DomainError } from '../errors.js';
import { newId } from '../store/ids.js';
import type { OperatorRecord, Withdrawal } from '../store/operators/operators.js';
import type { Store } from '../store/store.js';

export type WithdrawalsOptions = {
  store: Store;
  client: PublicClient;
  network: Network;
  /** Holds platform-custody revenue and pays for gas. */
  treasuryKey: Hex;
  minimum: bigint;
  logger: Logger;
  /** How long a request waits for its receipt before answering `submitted` (a watcher finishes it). */
  receiptTimeoutMs?: number;
  /**
   * Whether this instance is the one that sends from the treasury now (it holds the treasury's
   * lease). The others only reserve: their requests stay `requested` until the sender's watcher
   * sends them, a few seconds later.
   */
  isSender?: () => Promise<boolean>;
};

/** How often the sending instance looks for requested and unconfirmed withdrawals. */
const WATCH_EVERY_MS = 3_000;

/**
 * USDC withdrawals of operators' platform-custody revenue, by an ERC-20 `transfer` from the
 * treasury. The amount is reserved with the request (one transaction against the available
 * balance, so two requests cannot take the same money); the signed transaction is journalled
 * before it is broadcast; `reconcile` finishes whatever a crash left:
 *
 *   requested ──▶ submitted(tx) ──▶ confirmed | failed
 *
 * A submitted withdrawal whose transaction the node does not have, because the treasury cannot
 * pay its gas, is flagged `waitingForGas` (and alerted once) until a re-send goes through.
 *
 * Sends are serialized: the treasury key has one nonce sequence and only this queue uses it.
 *
 * @example
 * const withdrawals = createWithdrawals({ store, client, network, treasuryKey, minimum: 1_000_000n, logger });
 * await withdrawals.request(operator, { idempotencyKey: 'payout-2026-11' }); // everything available
 */
export function createWithdrawals(options: WithdrawalsOptions) {
  const { store, client, network, logger } = options;
  const treasury = privateKeyToAccount(options.treasuryKey);
  const receiptTimeoutMs = options.receiptTimeoutMs ?? 30_000;
  const isSender = options.isSender ?? (async () => true);
  let watcher: NodeJS.Timeout | undefined;
  let watching: Promise<unknown> = Promise.resolve();
  let queue: Promise<unknown> = Promise.resolve();
  const serialized = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = queue.then(fn, fn);
    queue = next.catch(() => undefined);
    return next;
  };

  async function send(w: Withdrawal): Promise<Withdrawal> {
    const data = encodeFunctionData({ abi: usdcAbi, functionName: 'transfer', args: [w.to, w.amount] });
    const [nonce, fees, gas] = await Promise.all([
      client.getTransactionCount({ address: treasury.address, blockTag: 'pending' }),
      client.estimateFeesPerGas(),
      client.estimateGas({ account: treasury.address, to: network.usdc.address, data }),
    ]);
    const rawTx = await treasury.signTransaction({
      chainId: network.chainId,
      type: 'eip1559',
      to: network.usdc.address,
      data,
      nonce,
      gas: (gas * 12n) / 10n,
      maxFeePerGas: fees.maxFeePerGas,
      maxPriorityFeePerGas: fees.maxPriorityFeePerGas,
    });
    const txHash = keccak256(rawTx);
    // Another sender (a lease handed over while this one was signing) journalled or finished it first: its transaction is the one.
    if (!(await store.operators.recordWithdrawalTx(w.id, { txHash, rawTx }))) return (await store.operators.withdrawal(w.id))!;
    await client.sendRawTransaction({ serializedTransaction: rawTx });
    return { ...w, state: 'submitted', txHash, rawTx };
  }

  /** The receipt decides: success with the token's own Transfer(treasury, to, amount) log, or failed. */
  async function finish(w: Withdrawal, receipt: TransactionReceipt): Promise<void> {
    const paid =
      receipt.status === 'success' &&
      parseEventLogs({ abi: usdcAbi, eventName: 'Transfer', logs: receipt.logs }).some(
        (log) =>
          isAddressEqual(log.address, network.usdc.address) &&
          isAddressEqual(log.args.from, treasury.address) &&
          isAddressEqual(log.args.to, w.to) &&
          log.args.value === w.amount,
      );
    await store.operators.finishWithdrawal(
      w.id,
      paid
        ? { state: 'confirmed' }
        : { state: 'failed', error: receipt.status === 'success' ? 'no matching Transfer log' : 'the transfer reverted' },
    );
  }

  async function awaitReceipt(w: Withdrawal, deadline: number): Promise<void> {
    const receipt = await waitForReceipt(client, w.txHash!, deadline, network.receiptPollingMs);
    if (receipt) await finish(w, receipt);
  }

  /**
   * Sends a requested withdrawal (or re-sends a journalled one) and waits, bounded, for its
   * receipt. Only a withdrawal with nothing journalled is failed on a send error: once a signed
   * transaction exists it may still be mined, so it stays `submitted` until the chain says.
   */
  async function process(w: Withdrawal): Promise<Withdrawal> {
    await serialized(async () => {
      let current = (await store.operators.withdrawal(w.id)) ?? w;
      let waiting = false;
      if (current.state === 'requested') {
        try {
          current = await send(current);
        } catch (error) {
          const message = `the transfer could not be sent: ${(error as Error).message.split('\n')[0]}`;
          current = (await store.operators.withdrawal(w.id))!;
          if (current.state === 'requested') await store.operators.finishWithdrawal(w.id, { state: 'failed', error: message });
          else if (current.state === 'submitted') {
            logger.warn({ err: error, withdrawal: w.id }, 'broadcasting a withdrawal failed; it stays submitted until the chain decides');
            waiting = await waitsForGas(current);
          }
        }
      } else if (current.state === 'submitted' && !(await receiptOf(current))) {
        if (await nonceTakenElsewhere(current)) {
          await store.operators.finishWithdrawal(w.id, { state: 'failed', error: 'the transaction was never mined and its nonce is used' });
          return;
        }
        // The same signed transaction, so the same hash: a re-send can never pay twice.
        try {
          await client.sendRawTransaction({ serializedTransaction: current.rawTx! });
          const waited = await store.operators.setWaitingForGas(w.id, false);
          if (waited) logger.info({ withdrawal: w.id }, 'a withdrawal that waited for gas is sent');
        } catch (error) {
          logger.warn({ err: error, withdrawal: w.id }, 're-sending a withdrawal failed');
          waiting = await waitsForGas(current);
        }
      }
      // Waiting for gas, no receipt can come: the watcher sends it again once the treasury is funded.
      if (current.state === 'submitted' && !waiting) await awaitReceipt(current, Date.now() + receiptTimeoutMs);
    });
    return (await store.operators.withdrawal(w.id))!;
  }

  /**
   * After a failed broadcast: a transaction the node does not know, whose gas the treasury's ETH
   * cannot pay, waits for gas. Marked in the store and alerted (error level) when it starts
   * waiting: once, on whichever instance marks it.
   */
  async function waitsForGas(w: Withdrawal): Promise<boolean> {
    const tx = parseTransaction(w.rawTx!);
    const needed = tx.gas! * tx.maxFeePerGas!;
    const [balance, known] = await Promise.all([
      client.getBalance({ address: treasury.address }),
      client.getTransaction({ hash: w.txHash! }).then(
        () => true,
        () => false,
      ),
    ]);
    const waiting = !known && balance < needed;
    if ((await store.operators.setWaitingForGas(w.id, waiting)) && waiting) {
      const detail = { withdrawal: w.id, treasury: treasury.address, balanceWei: balance.toString(), neededWei: needed.toString() };
      logger.error(detail, 'a withdrawal is waiting for gas: send the treasury ETH, then the same transaction is sent again');
    }
    return waiting;
  }

  const receiptOf = (w: Withdrawal) => client.getTransactionReceipt({ hash: w.txHash! }).catch(() => undefined);

  /**
   * The treasury's mined nonce is past this transaction's, yet the node says it has no receipt, and
   * still says so after two blocks: another transaction took the nonce. Failing it frees the money
   * for another withdrawal, so only the node's own "no such receipt" counts, never an RPC error (a
   * 429, a timeout) nor one look at a node a block behind the one that counted the nonce: ours may
   * be mined, and failing it would pay the operator twice.
   *
   * @example await nonceTakenElsewhere(w) // false while the receipt cannot be read: the next round looks again
   */
  async function nonceTakenElsewhere(w: Withdrawal): Promise<boolean> {
    const mined = await client.getTransactionCount({ address: treasury.address, blockTag: 'latest' });
    if (mined <= parseTransaction(w.rawTx!).nonce!) return false;
    const deadline = Date.now() + 2 * network.blockTimeMs;
    for (;;) {
      const seen = await client.getTransactionReceipt({ hash: w.txHash! }).then(
        () => 'mined' as const,
        (error: unknown) => (error instanceof TransactionReceiptNotFoundError ? ('absent' as const) : ('unknown' as const)),
      );
      if (seen !== 'absent') return false;
      if (Date.now() > deadline) return true;
      await sleep(network.receiptPollingMs);
    }
  }

  return {
    treasury: treasury.address,

    /** Reserves and sends a withdrawal of `amount` (default: everything available) to the operator's payout address. */
    async request(
      operator: OperatorRecord,
      input: { amount?: bigint; idempotencyKey: string },
    ): Promise<{ created: boolean; withdrawal: Withdrawal }> {
      if (!operator.payoutAddress)
        throw new DomainError('payout_address_missing', 'set payoutAddress (PATCH /operator) before withdrawing');
      const amount = input.amount ?? (await store.operators.balance(operator.id)).usdcAvailable;
      const result = await store.operators.requestWithdrawal({
        id: newId('wd'),
        operatorId: operator.id,
        amount,
        to: operator.payoutAddress,
        idempotencyKey: input.idempotencyKey,
        minimum: options.minimum,
      });
      if (!result.ok) {
        const available = result.available.toString();
        const least = options.minimum > 0n ? options.minimum : 1n;
        if (result.reason === 'below_minimum')
          throw new DomainError('below_minimum', `a withdrawal is at least ${least} atomic units`, {
            minimum: least.toString(),
            available,
          });
        throw new DomainError('insufficient_balance', `only ${available} atomic units are available to withdraw`, { available });
      }
      if (!result.created || !(await isSender())) return { created: result.created, withdrawal: result.record };
      return { created: true, withdrawal: await process(result.record) };
    },

    /** Sends or finishes every withdrawal a crash, a slow chain or another instance left unfinished (on the sender only). */
    async reconcile(): Promise<number> {
      if (!(await isSender())) return 0;
      const unfinished = await store.operators.unfinishedWithdrawals();
      for (const w of unfinished) await process(w);
      return unfinished.length;
    },

    /** Reconciles now and then every few seconds, until `stop`. */
    start() {
      const watch = () => {
        watching = this.reconcile().catch((err: unknown) => logger.error({ err }, 'cannot finish unfinished withdrawals'));
      };
      watch();
      watcher = setInterval(watch, WATCH_EVERY_MS).unref();
    },
    /** Stops watching, once a reconciliation under way has finished (before the store closes). */
    async stop() {
      clearInterval(watcher);
      await watching;
    },
  };
}

export type Withdrawals = ReturnType<typeof createWithdrawals>;
