import type { Address, Hex } from 'viem';

/**
 * The settlement journal: one row per EIP-3009 authorization turnpike has accepted, unique on
 * (chainId, asset, payer, nonce), which is exactly what the token contract itself keys on, with
 * the purpose it was taken for.
 *
 *   verified ─▶ submitting ─▶ submitted(txHash) ─▶ settled | failed
 *     └────────────────────────────────────────────────────────┘ (a hold whose call failed or was abandoned)
 *
 * `submitting` is claimed before any transaction exists; `submitted` is written with the signed
 * transaction *before* it is broadcast, so after a crash the same transaction (same hash) can be
 * looked up or re-sent, never a second one.
 */
export const paymentStates = ['verified', 'submitting', 'submitted', 'settled', 'failed'] as const;
export type PaymentState = (typeof paymentStates)[number];

/** Addresses and nonce lower-cased, so the key is one spelling per payment. */
export type PaymentKey = { chainId: number; asset: Address; payer: Address; nonce: Hex };

export type NewPayment = PaymentKey & {
  payTo: Address;
  amount: bigint;
  validAfter: bigint;
  validBefore: bigint;
  signature: Hex;
  /** The network id as the request spelled it (v1 name or CAIP-2), echoed in responses. */
  network: string;
  /**
   * What the authorization was taken for (see `purposes` in the facilitator): a payment buys one
   * thing. A caller presenting it for anything else is answered that it is used.
   *
   * @example 'call:weather:9f2c…' | 'topup:0xab…' | 'settle'
   */
  purpose: string;
};

export type PaymentRecord = NewPayment & {
  state: PaymentState;
  /** The instance that reserved or claimed it (see `Store.instanceId`). */
  owner?: string;
  /**
   * The claimer answered `settlement_pending` for it: the next identical /settle gets the final
   * outcome, once (see `takePendingAnswer`).
   */
  pendingAnswered: boolean;
  /**
   * Its result was delivered once its transaction was signed and journalled, before the receipt
   * (a server with `settlement: deferred`, or a strict one whose receipt took longer than the
   * facilitator waits): if that transaction fails, the row is a loss.
   */
  deferred: boolean;
  txHash?: Hex;
  rawTx?: Hex;
  relayer?: Address;
  relayerNonce?: number;
  errorReason?: string;
  errorMessage?: string;
  createdAt: number;
  updatedAt: number;
};

export type SignedSettlement = { txHash: Hex; rawTx: Hex; relayer: Address; relayerNonce: number };
export type SettlementOutcome =
  | { state: 'settled'; txHash: Hex }
  | {
      state: 'failed';
      errorReason: string;
      errorMessage?: string;
      txHash?: Hex;
      /**
       * Not the payer's doing (turnpike's transaction mined after the authorization expired, or
       * never mined): a deferred payment's loss is cleared at once, so the payer is not refused.
       */
      excused?: boolean;
    };

export interface PaymentJournal {
  get(key: PaymentKey): Promise<PaymentRecord | undefined>;
  /**
   * Holds a verified payment for one tool call before the upstream runs (`verified`): of many
   * requests carrying the same authorization, exactly one gets `reserved: true` and runs the tool.
   * A store may make the hold survive a process crash only, not a power cut, until its next
   * durable write: nothing is ever answered on a hold alone (a delivered result follows the
   * claim), and a hold a power cut lost is a call nobody was answered or charged for.
   */
  reserve(payment: NewPayment): Promise<{ reserved: true } | { reserved: false; record: PaymentRecord }>;
  /**
   * Takes the payment for settlement: inserts it as `submitting`, or moves it there from a
   * `verified` hold of the same purpose (never someone else's). Exactly one caller ever gets
   * `claimed: true` for a key; the others get the record.
   */
  claim(payment: NewPayment, defer?: Deferral): Promise<{ claimed: true; deferred: boolean } | { claimed: false; record: PaymentRecord }>;
  /**
   * `claim`, only if `balance` (the payer's, read from the chain) covers this payment and the
   * payer's other claimed payments not final yet, judged under the payer lock on every instance:
   * otherwise nothing is written and `short` is what those others take. Payments that together
   * exceed the balance are never all sent (the last ones would revert, their gas spent for nothing).
   * A hold (`verified`) does not count: only its claim would spend. Nor does a claimed payment
   * whose nonce is in `spent`: the token reported it used at the block `balance` was read at, so
   * that balance has it taken off already (mined, its row not final yet); `counted` names the
   * nonces that were counted, for the caller to look up.
   *
   * @example await journal.claimCovered(payment, 10_000n) // { claimed: false, short: 10_000n, counted: ['0x…'] } while another 10_000 is on its way
   */
  claimCovered(
    payment: NewPayment,
    balance: bigint,
    defer?: Deferral,
    spent?: readonly Hex[],
  ): Promise<
    { claimed: true; deferred: boolean } | { claimed: false; record: PaymentRecord } | { claimed: false; short: bigint; counted: Hex[] }
  >;
  /**
   * Records the signed transaction before it is broadcast (`submitting` → `submitted`), or a
   * replacement for one the node refused (it can then never be mined). Only on a claim this
   * instance holds: else it throws, and the transaction is never broadcast.
   */
  recordTransaction(key: PaymentKey, tx: SignedSettlement): Promise<void>;
  /**
   * Final state of a claim (`submitting`/`submitted`): only its settlement finishes it, on the
   * instance that holds it (`owner`). Says whether it did: false, changing nothing, when another
   * instance holds it (took it over: see `adopt`). A row in neither state is a caller's bug, thrown.
   *
   * @example await journal.finish(key, { state: 'settled', txHash }) // false once a recovering instance adopted it
   */
  finish(key: PaymentKey, outcome: SettlementOutcome): Promise<boolean>;
  /**
   * Takes over an unfinished entry from `from`, the instance that held it (it stopped, or its
   * remote ask ended without an answer; null: written before owners were recorded): from then on
   * only this instance finishes or releases it. The entry as it is now, or undefined, changing
   * nothing, when `from` no longer holds it (another instance took it over, or it is final or gone).
   *
   * @example const mine = await journal.adopt(key, deadInstanceId); if (mine) await settler.reconcile(mine);
   */
  adopt(key: PaymentKey, from: string | null): Promise<PaymentRecord | undefined>;
  /**
   * Ends a hold whose call failed or was abandoned (`verified` → `failed`, nothing was sent).
   * Moves nothing else, and says whether it moved the row: a claimed row is its settlement's.
   *
   * @example await journal.failHold(key, { errorReason: 'call_failed', errorMessage: 'upstream 500' }); // false once claimed
   */
  failHold(key: PaymentKey, why: { errorReason: string; errorMessage: string }): Promise<boolean>;
  /**
   * Records, before the claimer answers `settlement_pending`, that it did (durably). A payment with
   * a kept result (a gateway's call, which delivers on that answer) is marked `deferred` with it.
   */
  answeredPending(key: PaymentKey): Promise<void>;
  /**
   * Takes the one final answer owed after a `settlement_pending`: true for exactly one caller, once
   * the row is final and only if a pending answer was given.
   */
  takePendingAnswer(key: PaymentKey): Promise<boolean>;
  /**
   * Gives a hold or a claim back when nothing can have reached the chain, so the payer may retry;
   * only one this instance holds. Says whether it did: false, changing nothing, when the entry is
   * final, gone, or another instance holds it.
   */
  release(key: PaymentKey): Promise<boolean>;
  /** Gives back a hold (`verified`) and nothing else: a claim that may have reached the chain stays. */
  releaseHold(key: PaymentKey): Promise<void>;
  /**
   * Entries a crash may have left between reservation or claim and outcome, oldest first: all of
   * them, or those of one owner (the instance that reserved or claimed them; null for entries
   * written before owners were recorded).
   */
  unfinished(filter?: { owner: string | null }): Promise<PaymentRecord[]>;
  /** The owners of unfinished entries. */
  unfinishedOwners(): Promise<(string | null)[]>;
  /**
   * Keeps a paid call's result with its payment before the payment settles (again: the latest
   * call for it wins), so a client whose answer was lost to a crash or a dropped connection gets
   * it back by sending the same call with the same payment (and, if it is bound to one, from the
   * same caller: `KeptResult.caller`). Like a hold, it may survive a process
   * crash only until the settlement claim that follows it, whose sync makes it durable.
   */
  keepResult(key: PaymentKey, kept: KeptResult): Promise<void>;
  /** A payer's deferred payments that failed on chain and are not cleared yet (see `clearLosses`). */
  losses(payer: PayerKey): Promise<{ count: number; amount: bigint }>;
  /** Every loss not cleared yet, oldest first. */
  allLosses(): Promise<PaymentRecord[]>;
  /** Clears a payer's losses, on every token (they were paid off chain, or written off): their calls are taken again. */
  clearLosses(payer: Address): Promise<number>;
  /** The result kept for a payment, the call it answered, and the caller it is bound to. */
  keptResult(key: PaymentKey): Promise<KeptResult | undefined>;
  /**
   * Forgets the results nobody can ask for any more: their payment's authorization expired
   * before `now` (Unix seconds), or the payment is no longer in the journal.
   */
  forgetResults(now: number): Promise<void>;
}

/** A payer on one token: what losses and deferral limits are kept per. */
export type PayerKey = Pick<PaymentKey, 'chainId' | 'asset' | 'payer'>;

/**
 * Asks `claim` to mark the payment deferred (deliver before the receipt) if, judged under a lock on
 * the payer on every instance at once: the payer has no losses, `balance` (read from the chain)
 * covers this payment and every other unfinished one of theirs, their deferred payments still
 * unfinished stay within `cap`, and every payer's on this token, unfinished or lost and not
 * cleared, stays within `total`, judged under a lock on the token's own row as well (payers are free
 * to use many addresses: this bounds what all of them together can take unpaid, on every instance
 * at once). Otherwise it is claimed strict.
 */
export type Deferral = { balance: bigint; cap: bigint; total: bigint };

/**
 * A paid call's result as delivered (JSON), the purpose it was kept for (the call's, see
 * `purposes.call`), and `caller`: a digest of what the paying caller's retry shows (its
 * `Idempotency-Key`, or its network: see `FacilitatorPort.redeliver`), never that itself; absent
 * when the call showed neither.
 */
export type KeptResult = { call: string; result: string; caller?: string };
