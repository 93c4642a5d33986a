import {
  type Address,
  type Hex,
  type PublicClient,
  type TransactionReceipt,
  decodeFunctionData,
  encodeFunctionData,
  getAbiItem,
  isAddressEqual,
  parseEventLogs,
  parseTransaction,
} from 'viem';
import { multicall3Abi } from '../../contracts-abi/multicall3.js';
import { usdcAbi } from '../../contracts-abi/usdc.js';
import { MULTICALL3 } from '../chain/networks.js';
import { receiptCadence, sleep } from '../chain/receipts.js';
import { BroadcastRejectedError, type RelayerPool, type SignedTransaction } from '../chain/relayer.js';
import type { PaymentJournal, PaymentKey, PaymentRecord, SettlementOutcome } from '../store/journal/journal.js';
import { reasons } from '../x402/reasons.js';
import type { FacilitatorRequest, SettleResponse } from '../x402/schemas.js';
import type { StateReader } from './chain-state.js';
import { FacilitatorUnavailableError } from './errors.js';
import { type IntentRules, type PaymentIntent, type Rejection, presentsRow, takenLate, toIntent, toNewPayment } from './intent.js';
import { purposes } from './purposes.js';
import { type Admit, alreadyUsed, verifyIntent } from './verify.js';

export type SettleDeps = {
  rules: IntentRules;
  client: PublicClient;
  readState: StateReader;
  journal: PaymentJournal;
  relayers: RelayerPool;
  now: () => number;
  /** How long a /settle call waits for the receipt before answering `settlement_pending`. */
  receiptTimeoutMs: number;
  /** Called with work that outlives a request (finishing a pending settlement). */
  background: (task: Promise<unknown>) => void;
  admit: Admit;
  /** The most a payer's deferred payments not yet final may add up to, atomic units (see `Deferral`). */
  deferredCap: bigint;
  /** The most every payer's deferred payments not settled, and losses not cleared, may add up to, atomic units (see `Deferral`). */
  deferredTotal: bigint;
};

/**
 * A result leaves before its receipt (deferred, or strict once the receipt wait is over) only while
 * its authorization has this long left, in seconds: a transaction not mined in that time is
 * congestion, not a payer who signed a window too short to be mined in and took the result.
 */
const EARLY_DELIVERY_MIN_SECONDS = 30n;

/**
 * The most of a payer's in-flight payments (oldest first, the likeliest mined) looked up on chain
 * when their balance falls short, so a payer with many tiny payments in flight cannot make one
 * refused payment cost turnpike that many reads.
 */
const MAX_SPENT_LOOKUPS = 16;

/** How a caller wants a payment settled: `deferred` answers once the transaction is signed and journalled (see `settle`). */
export type SettleOptions = { deferred?: boolean };

type Payment = Pick<PaymentRecord, 'payer' | 'payTo' | 'amount' | 'asset'>;
/** A payment with its authorization's nonce and when turnpike took it (ms since the epoch). */
type Taken = Payment & Pick<PaymentRecord, 'nonce' | 'createdAt' | 'validBefore'>;

/**
 * What a mined transaction did for a payment: settled only if it succeeded and shows this very
 * authorization used (the token's AuthorizationUsed(payer, nonce)) with its Transfer(payer, payTo,
 * amount) as the very next log. Any Transfer of the right parties and amount is not enough: a
 * Multicall3 batch may carry two payments of one payer to one payee for the same amount, one of
 * them failing on its own (its nonce canceled ahead of the batch), and the other's Transfer must
 * not settle it.
 *
 * @example await journal.finish(key, outcomeOf(receipt, record)); // { state: 'settled', txHash }
 */
export function outcomeOf(receipt: TransactionReceipt, payment: Payment & Pick<PaymentKey, 'nonce'>): SettlementOutcome {
  if (receipt.status !== 'success') {
    const errorMessage = 'the settlement transaction reverted';
    return { state: 'failed', txHash: receipt.transactionHash, errorReason: reasons.transactionFailed, errorMessage };
  }
  const txHash = receipt.transactionHash;
  if (paidIn(receipt.logs, payment)) return { state: 'settled', txHash };
  return { state: 'failed', txHash, errorReason: reasons.transferEventMismatch, errorMessage: 'no matching Transfer log' };
}

/**
 * Whether `logs` (one transaction's) show `payment`'s authorization used and, as the next log,
 * the token's Transfer of exactly this payment (USDC emits the two back to back, nothing between).
 *
 * @example paidIn(batchReceipt.logs, canceledOne) // false, though the batch moved the same amount for another nonce
 */
function paidIn(logs: TransactionReceipt['logs'], payment: Payment & Pick<PaymentKey, 'nonce'>): boolean {
  const used = parseEventLogs({ abi: usdcAbi, eventName: 'AuthorizationUsed', logs }).filter(
    (log) =>
      isAddressEqual(log.address, payment.asset) &&
      isAddressEqual(log.args.authorizer, payment.payer) &&
      log.args.nonce.toLowerCase() === payment.nonce.toLowerCase(),
  );
  return used.some((u) => {
    const next = logs.find((l) => l.logIndex === u.logIndex + 1);
    return (
      next !== undefined &&
      parseEventLogs({ abi: usdcAbi, eventName: 'Transfer', logs: [next] }).some(
        (log) =>
          isAddressEqual(log.address, payment.asset) &&
          isAddressEqual(log.args.from, payment.payer) &&
          isAddressEqual(log.args.to, payment.payTo) &&
          log.args.value === payment.amount,
      )
    );
  });
}

/** Blocks looked at before a payment's estimated first block, for clock and block-time slack. */
const LOOKBACK_MARGIN_BLOCKS = 32n;
/** The most blocks one log query spans (what RPC providers commonly allow). */
const MAX_LOOKBACK_BLOCKS = 10_000n;

/**
 * The transaction that used `payment`'s authorization since `sinceMs` (ms since the epoch),
 * whoever sent it, if it moved exactly this payment: the token's AuthorizationUsed(payer, nonce)
 * log followed by its Transfer(payer, payTo, amount). Undefined when none did: not used, canceled,
 * or used for another authorization under the same nonce.
 */
export async function settledBy(
  client: PublicClient,
  blockTimeMs: number,
  payment: Payment & Pick<PaymentKey, 'nonce'>,
  sinceMs: number,
): Promise<Hex | undefined> {
  const latest = await client.getBlockNumber();
  const estimated = BigInt(Math.ceil((Date.now() - sinceMs) / blockTimeMs)) + LOOKBACK_MARGIN_BLOCKS;
  const back = estimated < MAX_LOOKBACK_BLOCKS ? estimated : MAX_LOOKBACK_BLOCKS;
  const fromBlock = latest > back ? latest - back : 0n;
  const event = getAbiItem({ abi: usdcAbi, name: 'AuthorizationUsed' });
  const args = { authorizer: payment.payer, nonce: payment.nonce };
  const logs = await client.getLogs({ address: payment.asset, event, args, fromBlock, toBlock: latest });
  for (const used of logs) {
    const receipt = await client.getTransactionReceipt({ hash: used.transactionHash });
    if (receipt.status === 'success' && paidIn(receipt.logs, payment)) return used.transactionHash;
  }
  return undefined;
}

const keyString = (k: PaymentKey) => `${k.chainId}:${k.asset}:${k.payer}:${k.nonce}`;
const isFinal = (r: PaymentRecord | undefined) => r?.state === 'settled' || r?.state === 'failed';

/**
 * Settles payments exactly once, each for the one purpose it was taken for. The journal's unique
 * key decides who settles, and never for a purpose other than the row's; a retried or duplicated
 * settle never sends a second transaction. Who else presents the payment gets, by purpose:
 *
 * - another purpose: `nonce_already_used` (a payment buys one thing);
 * - the public API (`purposes.api`): `nonce_already_used` too, so one authorization is one success
 *   there; except a failure, answered as what it is, and the one retry the reference resource
 *   servers make after `settlement_pending`, which gets the outcome (see `retryAfterPending`);
 * - an in-process owner (a call, a top-up), which acts once per payment on its own: the outcome,
 *   waited for (in-process through the claimer's promise, across processes in the journal), for
 *   the journalled payment itself only (`presentsRow`); a copy with another amount or signature is
 *   `nonce_already_used`, as a top-up credits the amount its request asks.
 *
 * @example await settler.settle(forgedCopyFor100x, purposes.topup(payTo, `key:${keyId}`)) // { success: false, errorReason: 'invalid_exact_evm_nonce_already_used' }
 */
export function createSettler(deps: SettleDeps) {
  const { journal, relayers, client, rules } = deps;
  const inFlight = new Map<string, Promise<SettleResponse>>();

  const refuse = (network: string, r: Rejection): SettleResponse => ({
    success: false,
    transaction: '',
    network,
    ...(r.payer ? { payer: r.payer } : {}),
    errorReason: r.reason,
    errorMessage: r.message,
  });
  type Outcome = Pick<PaymentRecord, 'state' | 'txHash' | 'errorReason' | 'errorMessage'> & { deferred?: boolean };
  const abandoned: Outcome = {
    state: 'failed',
    errorReason: reasons.unexpectedSettle,
    errorMessage: 'the settlement was abandoned; retry',
  };
  /** The answer a row gives; no row (released meanwhile) is an abandoned settlement, to retry. */
  const respond = (intent: PaymentIntent, record: Outcome = abandoned): SettleResponse => {
    const base = { transaction: record.txHash ?? '', network: intent.networkId, payer: intent.authorization.from };
    if (record.state === 'settled') return { success: true, ...base };
    if (record.state === 'failed') {
      return {
        success: false,
        ...base,
        errorReason: record.errorReason ?? reasons.transactionFailed,
        ...(record.errorMessage ? { errorMessage: record.errorMessage } : {}),
      };
    }
    return {
      success: false,
      ...base,
      errorReason: reasons.settlementPending,
      errorMessage: record.deferred
        ? 'deferred settlement: the transaction is signed, journalled and sent, not confirmed yet'
        : 'the settlement transaction is not confirmed yet; retry /settle with the same payment',
    };
  };

  /** Whether `intent`'s result may leave before its receipt (see `EARLY_DELIVERY_MIN_SECONDS`). */
  const leavesEarly = (intent: PaymentIntent) => intent.authorization.validBefore >= BigInt(deps.now()) + EARLY_DELIVERY_MIN_SECONDS;

  /** How often receipts (and rows a settlement in flight will finish) are looked at: this node's pace. */
  const cadence = receiptCadence(rules.network);

  /** The row once its settlement is final, or as it is after a bounded wait (undefined: released). */
  async function awaitOutcome(key: PaymentKey): Promise<PaymentRecord | undefined> {
    await inFlight.get(keyString(key))?.catch(() => undefined);
    const deadline = Date.now() + deps.receiptTimeoutMs;
    for (;;) {
      const record = await journal.get(key);
      if (!record || isFinal(record) || Date.now() > deadline) return record;
      await sleep(cadence.pollMs());
    }
  }

  /** The answer to a payment someone already took (see `createSettler`). */
  async function answerTaken(intent: PaymentIntent, record: PaymentRecord, purpose: string): Promise<SettleResponse> {
    const used = () => refuse(intent.networkId, alreadyUsed(record, intent.authorization.from));
    if (record.purpose !== purpose || record.state === 'verified') return used();
    // Only the journalled payment itself: a top-up credits the amount its request names, and payer and nonce are public once sent.
    if (purpose !== purposes.api) return presentsRow(intent, record) ? respond(intent, await awaitOutcome(intent.key)) : used();
    if (record.state === 'failed') return respond(intent, record);
    return record.pendingAnswered && presentsRow(intent, record) ? retryAfterPending(intent) : used();
  }

  /**
   * The retry `settleWithPendingRetry` (@x402/core) and Go's server make with the identical body
   * after `settlement_pending`: it gets the final outcome, once (the flag is taken by one guarded
   * UPDATE, so two retries cannot both get it). Still pending: pending again, the flag kept.
   */
  async function retryAfterPending(intent: PaymentIntent): Promise<SettleResponse> {
    const record = await awaitOutcome(intent.key);
    if (!record || !isFinal(record)) return respond(intent, record);
    if (await journal.takePendingAnswer(intent.key)) return respond(intent, record);
    return refuse(intent.networkId, alreadyUsed(record, intent.authorization.from));
  }

  /**
   * What a mined transaction of ours did for a payment (see `outcomeOf`); if it failed because a
   * copy of the same authorization was mined first (anyone may send it), that copy settled it.
   */
  async function judge(receipt: TransactionReceipt, payment: Taken): Promise<SettlementOutcome> {
    const outcome = outcomeOf(receipt, payment);
    if (outcome.state === 'settled') return outcome;
    // A node that cannot answer the log query leaves the failure as it is.
    const copy = await settledBy(client, rules.network.blockTimeMs, payment, payment.createdAt).catch(() => undefined);
    if (copy) return { state: 'settled', txHash: copy };
    // Mined once the authorization had expired, it reverted for turnpike's lateness, whatever the payer did.
    const block = await client.getBlock({ blockNumber: receipt.blockNumber }).catch(() => undefined);
    if (block && block.timestamp >= payment.validBefore) {
      return { ...outcome, errorMessage: 'the settlement transaction was mined after the authorization expired', excused: true };
    }
    return outcome;
  }

  const waitForReceipt = (hash: Hex, deadline: number, sentAt?: number) => cadence.waitFor(client, hash, deadline, sentAt);

  const calldata = (p: Pick<PaymentRecord, 'payer' | 'payTo' | 'amount' | 'validAfter' | 'validBefore' | 'nonce' | 'signature'>) =>
    encodeFunctionData({
      abi: usdcAbi,
      functionName: 'transferWithAuthorization',
      // The bytes overload: ~17k less gas than (v, r, s), and the only one smart wallets can use.
      args: [p.payer, p.payTo, p.amount, p.validAfter, p.validBefore, p.nonce, p.signature],
    });

  /** Whether the node knows a transaction (pending or mined); a failed look is a no. */
  const nodeHas = (hash: Hex) =>
    client.getTransaction({ hash }).then(
      () => true,
      () => false,
    );

  /**
   * Sign, journal, broadcast. A nonce the node refused gets a fresh transaction (the refused one
   * can never be mined); any other refusal releases the claim, so the payer can try again.
   */
  async function send(key: PaymentKey, data: Hex, asset: PaymentKey['asset']): Promise<SignedTransaction> {
    const record = (tx: SignedTransaction) =>
      journal.recordTransaction(key, { txHash: tx.txHash, rawTx: tx.rawTx, relayer: tx.relayer, relayerNonce: tx.nonce });
    for (let attempt = 1; ; attempt++) {
      let signed: SignedTransaction | undefined;
      try {
        return await relayers.submit({ to: asset, data }, async (tx) => {
          signed = tx;
          await record(tx);
        });
      } catch (error) {
        // Not refused, but not known to have arrived either: the receipt (or reconciliation) decides.
        if (signed && !(error instanceof BroadcastRejectedError)) return signed;
        // Refused, yet the node has it (an earlier delivery of the same request arrived, then "nonce too low"): it is out.
        if (signed && (await nodeHas(signed.txHash))) return signed;
        if (error instanceof BroadcastRejectedError && error.kind === 'nonce' && attempt < 3) continue;
        await journal.release(key);
        if (!(error instanceof BroadcastRejectedError)) {
          throw new FacilitatorUnavailableError('cannot prepare the settlement transaction', { cause: error });
        }
        throw new FacilitatorUnavailableError(
          error.kind === 'funds'
            ? 'the relayer cannot pay for gas; fund it and retry'
            : `the node refused the settlement: ${error.message}`,
          { cause: error },
        );
      }
    }
  }

  /**
   * Sends the payment's transaction and answers with its receipt's outcome; a deferred one is
   * answered as soon as its transaction is signed, journalled and sent, its receipt awaited behind.
   */
  async function run(intent: PaymentIntent, deferred: boolean): Promise<SettleResponse> {
    const { key } = intent;
    const payment = {
      payer: intent.authorization.from,
      payTo: intent.payTo,
      amount: intent.amount,
      asset: intent.asset.address,
      nonce: key.nonce,
      validBefore: intent.authorization.validBefore,
      createdAt: Date.now(),
    };
    const tx = await send(
      key,
      calldata({
        ...intent.authorization,
        payer: intent.authorization.from,
        payTo: intent.payTo,
        amount: intent.amount,
        signature: intent.signature,
      }),
      intent.asset.address,
    );
    const sentAt = performance.now();
    if (deferred) {
      deps.background(finishLater(key, tx.txHash, payment, sentAt));
      return respond(intent, { state: 'submitted', txHash: tx.txHash, deferred });
    }
    const receipt = await waitForReceipt(tx.txHash, Date.now() + deps.receiptTimeoutMs, sentAt);
    if (!receipt && !leavesEarly(intent)) {
      // Too little time left to answer pending: wait for the outcome as `finishLater` does (sending a
      // transaction the node lost again: left unsent, its nonce would stall every later one of its
      // relayer), then withhold or settle.
      await finishLater(key, tx.txHash, payment, sentAt);
      return respond(intent, await journal.get(key));
    }
    if (!receipt) {
      await journal.answeredPending(key);
      deps.background(finishLater(key, tx.txHash, payment, sentAt));
      return respond(intent, { state: 'submitted', txHash: tx.txHash });
    }
    const outcome = await judge(receipt, payment);
    await journal.finish(key, outcome);
    return respond(intent, outcome);
  }

  /**
   * Keeps watching a transaction (sent at `sentAt`) whose request was answered first, until its
   * authorization expires. Every two blocks without a receipt, a transaction the node does not
   * know (a broadcast that never arrived, one dropped from its pool) is sent again as signed,
   * while the authorization lasts: never mined, it would be a loss (deferred) charged to a payer
   * who paid, and its relayer's later transactions would wait behind its nonce.
   */
  async function finishLater(key: PaymentKey, hash: Hex, payment: Taken, sentAt: number) {
    const { validBefore } = payment;
    const until = (Number(validBefore) + 60) * 1000;
    const lookAgainMs = 2 * rules.network.blockTimeMs;
    let receipt = await waitForReceipt(hash, Math.min(until, Date.now() + lookAgainMs), sentAt);
    while (!receipt && Date.now() < Number(validBefore) * 1000) {
      const row = await journal.get(key);
      if (!row || isFinal(row)) return;
      if (row.state !== 'submitted' || row.txHash !== hash) break;
      if (!(await nodeHas(hash)) && (await wholeInJournal({ ...row, rawTx: row.rawTx! }))) {
        const tx = { rawTx: row.rawTx!, txHash: hash, relayer: row.relayer!, nonce: row.relayerNonce! };
        await relayers.rebroadcast(tx).catch(() => undefined); // refused: mined meanwhile, or the receipt wait below decides
      }
      receipt = await waitForReceipt(hash, Math.min(until, Date.now() + lookAgainMs));
    }
    receipt ??= await waitForReceipt(hash, until);
    const record = await journal.get(key);
    if (record && !isFinal(record)) await (receipt ? journal.finish(key, await judge(receipt, payment)) : reconcile(record));
  }

  /**
   * The payments a journalled transaction carries (one, or a Multicall3 batch's), by journal key;
   * undefined for a transaction of no settlement's shape.
   */
  function carriedBy(record: PaymentRecord & { rawTx: Hex }): PaymentKey[] | undefined {
    const tx = parseTransaction(record.rawTx);
    if (!tx.to || !tx.data) return undefined;
    let calls: { to: Address; data: Hex }[] = [{ to: tx.to, data: tx.data }];
    if (isAddressEqual(tx.to, MULTICALL3)) {
      const batch = decodeFunctionData({ abi: multicall3Abi, data: tx.data });
      if (batch.functionName !== 'aggregate3') return undefined;
      calls = batch.args[0].map((c) => ({ to: c.target, data: c.callData }));
    }
    const keys: PaymentKey[] = [];
    for (const call of calls) {
      const { args } = decodeFunctionData({ abi: usdcAbi, data: call.data });
      if (args?.length !== 7 && args?.length !== 9) return undefined;
      const [from, , , , , nonce] = args as unknown as [Address, Address, bigint, bigint, bigint, Hex];
      const asset = call.to.toLowerCase() as Address;
      keys.push({ chainId: record.chainId, asset, payer: from.toLowerCase() as Address, nonce: nonce.toLowerCase() as Hex });
    }
    return keys;
  }

  /**
   * Whether every payment a journalled transaction carries (one, or a Multicall3 batch) is
   * journalled with that very transaction. The relayer writes each payment of a batch before it
   * broadcasts, so a batch written only in part (a crash between two rows; a row since released or
   * moved to a replacement) was never sent, and must never be: it would settle a payment whose row
   * is gone.
   */
  async function wholeInJournal(record: PaymentRecord & { rawTx: Hex }): Promise<boolean> {
    const keys = carriedBy(record);
    if (!keys) return false;
    for (const key of keys) if ((await journal.get(key))?.txHash !== record.txHash) return false;
    return true;
  }

  /**
   * Whether another payment the journalled transaction carries (a batch's) still waits for it:
   * unfinished and journalled with it, its authorization perhaps still good. Its nonce is then
   * left to that payment's own giving up.
   *
   * @example await othersAwait(firstOfBatch) // true while the batch's second payment is unfinished
   */
  async function othersAwait(record: PaymentRecord & { rawTx: Hex }): Promise<boolean> {
    for (const key of carriedBy(record) ?? []) {
      if (keyString(key) === keyString(record)) continue;
      const row = await journal.get(key);
      if (row && row.txHash === record.txHash && !isFinal(row)) return true;
    }
    return false;
  }

  /**
   * Keeps a journalled transaction that is given up unmined from leaving its relayer's nonce a gap
   * that every later transaction of that relayer would wait behind, never mined: a no-op takes the
   * nonce (see `RelayerPool.fillGap`). Says whether the transaction may be given up now: once that
   * no-op is mined, it never can be; before, only if `moot` (mined anyway, it could only revert:
   * its authorization expired or used). Not mined in time: no, the next reconciliation looks again.
   * A batch another unfinished payment still waits for keeps its nonce (see `othersAwait`).
   *
   * @example if (!(await fillGapOf(record, expired))) return; // the no-op not mined yet
   */
  async function fillGapOf(record: PaymentRecord, moot: boolean): Promise<boolean> {
    const { rawTx, relayer, relayerNonce } = record;
    if (!rawTx || !relayer || relayerNonce === undefined) return true;
    if (await othersAwait({ ...record, rawTx })) return moot;
    const noop = await relayers.fillGap({ rawTx, relayer, nonce: relayerNonce });
    if (!noop || moot) return true;
    return (await waitForReceipt(noop.txHash, Date.now() + deps.receiptTimeoutMs)) !== undefined;
  }

  /**
   * Brings an unfinished journal entry to a final state after a crash or a lost receipt: the
   * recorded transaction's receipt if it was mined; otherwise the token's own word on the nonce.
   * A consumed authorization is never sent again; an unconsumed one is re-sent only as the very
   * same signed transaction, or its claim is released so the payer can retry.
   */
  async function reconcile(record: PaymentRecord) {
    if (record.state === 'verified') {
      // Reserved for a tool call that never finished: no output was delivered, nothing was sent.
      await journal.failHold(record, { errorReason: 'call_abandoned', errorMessage: 'the gateway stopped during the call' });
      return;
    }
    const payment: Taken = record;
    // A brief wait, not one look: a transient RPC miss must not read our own mined transaction as someone else's.
    const minedReceipt = () => (record.txHash ? waitForReceipt(record.txHash, Date.now() + 1000) : Promise.resolve(undefined));
    const mined = await minedReceipt();
    if (mined) return journal.finish(record, await judge(mined, payment));
    const used = await client.readContract({
      address: record.asset,
      abi: usdcAbi,
      functionName: 'authorizationState',
      args: [record.payer, record.nonce],
    });
    if (used) {
      // Mined between the two looks: our own transaction is not someone else's.
      const late = await minedReceipt();
      if (late) return journal.finish(record, await judge(late, payment));
      // Ours is given up: mined later, it only reverts (the authorization is used).
      await fillGapOf(record, true);
      const copy = await settledBy(client, rules.network.blockTimeMs, payment, record.createdAt);
      if (copy) return journal.finish(record, { state: 'settled', txHash: copy });
      return journal.finish(record, {
        state: 'failed',
        errorReason: reasons.nonceUsed,
        errorMessage: 'the authorization was consumed by a transaction turnpike did not send',
      });
    }
    const expired = BigInt(deps.now()) >= record.validBefore;
    const { rawTx, relayer, relayerNonce } = record;
    const sendable =
      record.state === 'submitted' && rawTx && relayer && relayerNonce !== undefined && (await wholeInJournal({ ...record, rawTx }));
    if (sendable && !expired) {
      try {
        await relayers.rebroadcast({ rawTx, txHash: record.txHash!, relayer, nonce: relayerNonce });
        const receipt = await waitForReceipt(record.txHash!, Date.now() + deps.receiptTimeoutMs);
        if (receipt) return journal.finish(record, await judge(receipt, payment));
        return; // still pending: the next reconciliation looks again
      } catch (error) {
        if (!(error instanceof BroadcastRejectedError)) throw error;
      }
      // Refused: "nonce too low" for our own transaction may mean it was mined since we looked, not that it never will be.
      const late = await minedReceipt();
      if (late) return journal.finish(record, await judge(late, payment));
    }
    // Expired by this clock, not yet by a minute (as `finishLater` waits): block clocks lag, and a sent transaction may still be mined.
    if (sendable && expired && BigInt(deps.now()) < record.validBefore + 60n) return;
    // Given up below: its nonce must not stay a gap, and it must not be mined and pay behind the journal's back.
    if (!(await fillGapOf(record, expired))) return; // the next reconciliation looks again
    const late = await minedReceipt();
    if (late) return journal.finish(record, await judge(late, payment));
    // A deferred payment's result may have left once its transaction was sent: never mined, it is a loss, not a claim to give back.
    if (record.deferred && sendable) {
      const errorMessage = 'the deferred settlement transaction was never mined and the authorization is unused';
      // Never mined is turnpike's failing, not the payer's: a loss, not held against them.
      const failed = {
        state: 'failed',
        errorReason: reasons.transactionFailed,
        errorMessage,
        txHash: record.txHash!,
        excused: true,
      } as const;
      return journal.finish(record, failed);
    }
    await journal.release(record);
  }

  /**
   * The payer's balance and which of `nonces` the token reports used, all at one block: a used one
   * is mined (or canceled), so that balance no longer holds it.
   *
   * @example await spentAt(intent, ['0x…']) // { balance: 5_000n, spent: ['0x…'] } once that payment is mined
   */
  async function spentAt(intent: PaymentIntent, nonces: Hex[]): Promise<{ balance: bigint; spent: Hex[] }> {
    const address = intent.asset.address;
    const payer = intent.authorization.from;
    try {
      const blockNumber = await client.getBlockNumber({ cacheTime: 0 });
      const [balance, ...used] = await Promise.all([
        client.readContract({ address, abi: usdcAbi, functionName: 'balanceOf', args: [payer], blockNumber }),
        ...nonces.map((nonce) =>
          client.readContract({ address, abi: usdcAbi, functionName: 'authorizationState', args: [payer, nonce], blockNumber }),
        ),
      ]);
      return { balance: balance as bigint, spent: nonces.filter((_, i) => used[i] === true) };
    } catch (error) {
      throw new FacilitatorUnavailableError('cannot read payment state from the chain', { cause: error });
    }
  }

  return {
    reconcile,
    /**
     * Settles a payment for `purpose`: a new one, or the caller's own hold of it. Anything else is
     * answered from the journal (see `createSettler`). With `deferred`, a payment the journal may
     * defer (see `Deferral`) is answered `settlement_pending` as soon as its transaction is signed,
     * journalled and sent; its receipt finishes the row behind (a failure is a loss). Any other is
     * settled strict: answered with its receipt.
     */
    async settle(request: FacilitatorRequest, purpose: string, options: SettleOptions = {}): Promise<SettleResponse> {
      const checked = toIntent(request, rules, deps.now());
      if (!checked.ok) {
        const late = await takenLate(journal, rules, request, purpose, checked);
        return late ? answerTaken(late.intent, late.record, purpose) : refuse(request.paymentRequirements.network, checked);
      }
      const { intent } = checked;
      const refused = await deps.admit(intent, purpose);
      if (refused) return refuse(intent.networkId, refused);
      const known = await journal.get(intent.key);
      if (known && (known.state !== 'verified' || known.purpose !== purpose)) return answerTaken(intent, known, purpose);

      const verified = await verifyIntent(deps, intent);
      if (!verified.ok) return refuse(intent.networkId, verified);
      const defer =
        options.deferred && verified.balance !== undefined && leavesEarly(intent)
          ? { balance: verified.balance, cap: deps.deferredCap, total: deps.deferredTotal }
          : undefined;
      const payment = toNewPayment(intent, purpose);
      let balance = verified.balance;
      let claim = balance === undefined ? await journal.claim(payment, defer) : await journal.claimCovered(payment, balance, defer);
      if (!claim.claimed && 'short' in claim && claim.counted.length > 0) {
        // Some of those may be mined already, their rows not final yet (the few ms until their
        // receipt is seen), so taken off the balance read too: judged again at one block.
        const onChain = await spentAt(intent, claim.counted.slice(0, MAX_SPENT_LOOKUPS));
        balance = onChain.balance;
        const again = defer && { ...defer, balance };
        claim = await journal.claimCovered(payment, balance, again, onChain.spent);
      }
      if (!claim.claimed && 'short' in claim) {
        const message =
          `payer holds ${balance}, and their payments being settled (${claim.short}) with this one (${intent.amount}) ` +
          'need more: it would fail on chain; retry once those are final';
        return refuse(intent.networkId, { reason: reasons.insufficientBalance, message, payer: intent.authorization.from });
      }
      if (!claim.claimed) return answerTaken(intent, claim.record, purpose);
      const work = run(intent, claim.deferred).finally(() => inFlight.delete(keyString(intent.key)));
      inFlight.set(keyString(intent.key), work);
      return work;
    },
    /**
     * The outcome of a payment's settlement, waited for (bounded) as the claimer's own answer;
     * undefined while it is only held, or once it is gone. Still unfinished after the wait, it is
     * pending only once a result may leave on it: its transaction journalled and the row
     * `deferred` (a failure is then a loss). A claim whose instance stopped before that is no
     * payment yet (recovery may release it): FacilitatorUnavailableError, retry. Sends nothing.
     *
     * @example await settler.outcome(intent) // throws for a claim its dead instance never sent
     */
    async outcome(intent: PaymentIntent): Promise<SettleResponse | undefined> {
      const record = await awaitOutcome(intent.key);
      if (!record || record.state === 'verified') return undefined;
      if (!isFinal(record) && !(record.deferred && record.txHash)) {
        throw new FacilitatorUnavailableError('the settlement of this payment is not under way yet; retry with the same payment');
      }
      return respond(intent, record);
    },
  };
}

export type Settler = ReturnType<typeof createSettler>;
