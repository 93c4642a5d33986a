import {
  type Hex,
  type PublicClient,
  type TransactionReceipt,
  encodeFunctionData,
  isAddressEqual,
  parseEventLogs,
} from 'viem';
import { usdcAbi } from '../../contracts-abi/usdc.js';
import { sleep, waitForReceipt as waitForChainReceipt } from '../chain/receipts.js';
import { BroadcastRejectedError, type RelayerPool, type SignedTransaction } from '../chain/relayer.js';
import type { PaymentJournal, PaymentKey, PaymentRecord, SettlementOutcome } from '../store/journal.js';
import { reasons } from '../x402/reasons.js';
import type { FacilitatorRequest, SettleResponse } from '../x402/schemas.js';
import type { StateReader } from './chain-state.js';
import { FacilitatorUnavailableError } from './errors.js';
import { type IntentRules, type PaymentIntent, toIntent, toNewPayment } from './intent.js';
import { verifyIntent } from './verify.js';

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
};

type Payment = Pick<PaymentRecord, 'payer' | 'payTo' | 'amount' | 'asset'>;

const keyString = (k: PaymentKey) => `${k.chainId}:${k.asset}:${k.payer}:${k.nonce}`;
const isFinal = (r: PaymentRecord | undefined) => r?.state === 'settled' || r?.state === 'failed';

/**
 * Settles payments exactly once. The journal's unique key decides who settles; everyone else
 * waits for that outcome (in-process through a shared promise, across processes by reading the
 * journal) and gets the same answer, so a retried or duplicated /settle never sends a second
 * transaction.
 */
export function createSettler(deps: SettleDeps) {
  const { journal, relayers, client, rules } = deps;
  const inFlight = new Map<string, Promise<SettleResponse>>();

  const respond = (intent: PaymentIntent, record: Pick<PaymentRecord, 'state' | 'txHash' | 'errorReason' | 'errorMessage'>): SettleResponse => {
    const base = { transaction: record.txHash ?? '', network: intent.networkId, payer: intent.authorization.from };
    if (record.state === 'settled') return { success: true, ...base };
    if (record.state === 'failed') {
      return { success: false, ...base, errorReason: record.errorReason ?? reasons.transactionFailed, ...(record.errorMessage ? { errorMessage: record.errorMessage } : {}) };
    }
    return { success: false, ...base, errorReason: reasons.settlementPending, errorMessage: 'the settlement transaction is not confirmed yet; retry /settle with the same payment' };
  };

  /** Someone else holds the claim: wait for their outcome, bounded. */
  async function awaitOther(intent: PaymentIntent): Promise<SettleResponse> {
    const shared = inFlight.get(keyString(intent.key));
    if (shared) return shared;
    const deadline = Date.now() + deps.receiptTimeoutMs;
    for (;;) {
      const record = await journal.get(intent.key);
      if (!record) return respond(intent, { state: 'failed', errorReason: reasons.unexpectedSettle, errorMessage: 'the settlement was abandoned; retry' });
      if (isFinal(record) || Date.now() > deadline) return respond(intent, record);
      await sleep(rules.network.receiptPollingMs);
    }
  }

  const waitForReceipt = (hash: Hex, deadline: number) => waitForChainReceipt(client, hash, deadline, rules.network.receiptPollingMs);


  /** The receipt must show success and the token's own Transfer(from, to, value) log. */
  function outcomeOf(receipt: TransactionReceipt, payment: Payment): SettlementOutcome {
    if (receipt.status !== 'success') {
      return { state: 'failed', txHash: receipt.transactionHash, errorReason: reasons.transactionFailed, errorMessage: 'the settlement transaction reverted' };
    }
    const transferred = parseEventLogs({ abi: usdcAbi, eventName: 'Transfer', logs: receipt.logs }).some(
      (log) =>
        isAddressEqual(log.address, payment.asset) &&
        isAddressEqual(log.args.from, payment.payer) &&
        isAddressEqual(log.args.to, payment.payTo) &&
        log.args.value === payment.amount,
    );
    return transferred
      ? { state: 'settled', txHash: receipt.transactionHash }
      : { state: 'failed', txHash: receipt.transactionHash, errorReason: reasons.transferEventMismatch, errorMessage: 'no matching Transfer log' };
  }

  const calldata = (p: Pick<PaymentRecord, 'payer' | 'payTo' | 'amount' | 'validAfter' | 'validBefore' | 'nonce' | 'signature'>) =>
    encodeFunctionData({
      abi: usdcAbi,
      functionName: 'transferWithAuthorization',
      // The bytes overload: ~17k less gas than (v, r, s), and the only one smart wallets can use.
      args: [p.payer, p.payTo, p.amount, p.validAfter, p.validBefore, p.nonce, p.signature],
    });

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
        if (error instanceof BroadcastRejectedError && error.kind === 'nonce' && attempt < 3) continue;
        await journal.release(key);
        if (!(error instanceof BroadcastRejectedError)) {
          throw new FacilitatorUnavailableError('cannot prepare the settlement transaction', { cause: error });
        }
        throw new FacilitatorUnavailableError(
          error.kind === 'funds' ? 'the relayer cannot pay for gas; fund it and retry' : `the node refused the settlement: ${error.message}`,
          { cause: error },
        );
      }
    }
  }

  async function run(intent: PaymentIntent): Promise<SettleResponse> {
    const { key } = intent;
    const payment = { payer: intent.authorization.from, payTo: intent.payTo, amount: intent.amount, asset: intent.asset.address };
    const tx = await send(key, calldata({ ...intent.authorization, payer: intent.authorization.from, payTo: intent.payTo, amount: intent.amount, signature: intent.signature }), intent.asset.address);
    const receipt = await waitForReceipt(tx.txHash, Date.now() + deps.receiptTimeoutMs);
    if (!receipt) {
      deps.background(finishLater(key, tx.txHash, payment, intent.authorization.validBefore));
      return respond(intent, { state: 'submitted', txHash: tx.txHash });
    }
    const outcome = outcomeOf(receipt, payment);
    await journal.finish(key, outcome);
    return respond(intent, outcome);
  }

  /** Keeps watching a transaction that outlived its request, until the authorization expires. */
  async function finishLater(key: PaymentKey, hash: Hex, payment: Payment, validBefore: bigint) {
    const until = (Number(validBefore) + 60) * 1000;
    const receipt = await waitForReceipt(hash, until);
    const record = await journal.get(key);
    if (record && !isFinal(record)) await (receipt ? journal.finish(key, outcomeOf(receipt, payment)) : reconcile(record));
  }

  /**
   * Brings an unfinished journal entry to a final state after a crash or a lost receipt: the
   * recorded transaction's receipt if it was mined; otherwise the token's own word on the nonce.
   * A consumed authorization is never sent again; an unconsumed one is re-sent only as the very
   * same signed transaction, or its claim is released so the payer can retry.
   */
  async function reconcile(record: PaymentRecord): Promise<void> {
    if (record.state === 'verified') {
      // Reserved for a tool call that never finished: no output was delivered, nothing was sent.
      return journal.finish(record, { state: 'failed', errorReason: 'call_abandoned', errorMessage: 'the gateway stopped during the call' });
    }
    const payment: Payment = record;
    if (record.txHash) {
      // A brief wait, not one look: a transient RPC miss must not read our own mined transaction as someone else's.
      const receipt = await waitForReceipt(record.txHash, Date.now() + 1000);
      if (receipt) return journal.finish(record, outcomeOf(receipt, payment));
    }
    const used = await client.readContract({
      address: record.asset,
      abi: usdcAbi,
      functionName: 'authorizationState',
      args: [record.payer, record.nonce],
    });
    if (used) {
      return journal.finish(record, {
        state: 'failed',
        errorReason: reasons.nonceUsed,
        errorMessage: 'the authorization was consumed by a transaction turnpike did not send',
      });
    }
    const expired = BigInt(deps.now()) >= record.validBefore;
    if (record.state === 'submitted' && record.rawTx && record.relayer && record.relayerNonce !== undefined && !expired) {
      try {
        await relayers.rebroadcast({ rawTx: record.rawTx, txHash: record.txHash!, relayer: record.relayer, nonce: record.relayerNonce });
        const receipt = await waitForReceipt(record.txHash!, Date.now() + deps.receiptTimeoutMs);
        if (receipt) return journal.finish(record, outcomeOf(receipt, payment));
        return; // still pending: the next reconciliation looks again
      } catch (error) {
        if (!(error instanceof BroadcastRejectedError)) throw error;
      }
    }
    await journal.release(record);
  }

  return {
    reconcile,
    async settle(request: FacilitatorRequest): Promise<SettleResponse> {
      const checked = toIntent(request, rules, deps.now());
      if (!checked.ok) {
        const network = request.x402Version === 2 ? request.paymentRequirements.network : request.paymentRequirements.network;
        return { success: false, transaction: '', network, ...(checked.payer ? { payer: checked.payer } : {}), errorReason: checked.reason, errorMessage: checked.message };
      }
      const { intent } = checked;
      const known = await journal.get(intent.key);
      if (known && known.state !== 'verified') return isFinal(known) ? respond(intent, known) : awaitOther(intent);

      const verified = await verifyIntent(deps, intent);
      if (!verified.ok) {
        return { success: false, transaction: '', network: intent.networkId, payer: intent.authorization.from, errorReason: verified.reason, errorMessage: verified.message };
      }
      const claim = await journal.claim(toNewPayment(intent));
      if (!claim.claimed) return isFinal(claim.record) ? respond(intent, claim.record) : awaitOther(intent);
      const work = run(intent).finally(() => inFlight.delete(keyString(intent.key)));
      inFlight.set(keyString(intent.key), work);
      return work;
    },
  };
}

export type Settler = ReturnType<typeof createSettler>;
