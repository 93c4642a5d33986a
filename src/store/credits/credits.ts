/**
 * The credits ledger: API keys with integer balances (micro-USD, 1 = one USDC atomic unit), and
 * one ledger entry per balance change, written in the same transaction as the change. The
 * database enforces what must never happen: a negative balance, two entries for one idempotency
 * key, a budget token spending past its cap.
 */
export type KeyStatus = 'active' | 'suspended' | 'revoked';
/**
 * What a key or token may pay for; absent lists mean everything. `serverIds`: the ids of the
 * servers `servers` named when the scope was made (absent on scopes made before they were kept).
 */
export type Scope = { servers?: string[]; serverIds?: string[]; tools?: string[] };

export type KeyRecord = {
  id: string;
  name: string;
  balance: bigint;
  scope?: Scope;
  expiresAt?: number;
  lifetimeLimit?: bigint;
  dailyLimit?: bigint;
  spentTotal: bigint;
  /** Spent on the current UTC day (0 once the day has turned). */
  spentToday: bigint;
  status: KeyStatus;
  /** The operator who made the key for a customer of theirs; absent for the instance admin's keys. */
  operatorId?: string;
  /** Its holder is notified (`balance.low`) when a debit takes the balance below this (micro-USD). */
  lowBalanceAlert?: bigint;
  createdAt: number;
  updatedAt: number;
};

export type NewKey = {
  id: string;
  hash: string;
  name: string;
  operatorId?: string;
  scope?: Scope;
  expiresAt?: number;
  lifetimeLimit?: bigint;
  dailyLimit?: bigint;
};

export type LedgerKind = 'topup' | 'debit' | 'refund' | 'adjustment' | 'transfer';
export type LedgerEntry = {
  id: string;
  keyId: string;
  kind: LedgerKind;
  /** Signed: debits are negative. */
  amount: bigint;
  balanceAfter: bigint;
  reason: string;
  idempotencyKey: string;
  tokenId?: string;
  ref?: Record<string, unknown>;
  createdAt: number;
};

export type Credit = {
  keyId: string;
  kind: 'topup' | 'adjustment';
  /** Positive; an adjustment may be negative, but never below a zero balance. */
  amount: bigint;
  reason: string;
  idempotencyKey: string;
  ref?: Record<string, unknown>;
};

export type Move = { from?: string; to?: string; amount: bigint; reason: string; idempotencyKey: string };
export type MoveResult =
  | { ok: true; applied: boolean; entries: LedgerEntry[] }
  | { ok: false; reason: 'key_unknown' | 'insufficient_balance'; keyId: string; balance?: bigint };

export type Debit = {
  keyId: string;
  tokenId?: string;
  amount: bigint;
  reason: string;
  idempotencyKey: string;
  ref?: Record<string, unknown>;
  /** An `Idempotency-Key` request: recorded with the debit, so a retry cannot charge again. */
  request?: { idempotencyKey: string; bodyHash: string };
  /**
   * The debit pays for a call still under way: it stays open until `closeDebits` (delivered) or
   * `refund`, and an open one left behind by a crash is refunded by a sweep.
   */
  open?: boolean;
};

export type DebitRefusal =
  | 'key_unknown'
  | 'key_suspended'
  | 'key_revoked'
  | 'key_expired'
  | 'insufficient_balance'
  | 'daily_limit'
  | 'lifetime_limit'
  | 'token_unknown'
  | 'token_revoked'
  | 'token_expired'
  | 'budget_exhausted'
  | 'request_in_progress';

export type DebitResult =
  /** `lowBalanceAlert`: the key's alert threshold as the debit read it (not a copy of the key remembered before). */
  | { ok: true; entry: LedgerEntry; balance: bigint; tokenRemaining?: bigint; lowBalanceAlert?: bigint }
  | { ok: false; reason: DebitRefusal; balance?: bigint; tokenRemaining?: bigint; limitRemaining?: bigint };

/** An `Idempotency-Key` request, kept with the charge it made: a credits debit or a post-paid usage entry. */
export type IdempotentRequest = { bodyHash: string; debitId?: string; usageId?: string; response?: string };

export type BudgetToken = {
  id: string;
  keyId: string;
  cap: bigint;
  spent: bigint;
  scope?: Scope;
  expiresAt: number;
  revokedAt?: number;
  createdAt: number;
};

/** An identity provider's user (or client) and the key that pays for its calls. */
export type OAuthSubject = { issuer: string; subject: string; keyId: string; createdAt?: number };

/**
 * A Checkout Session as recorded when it was opened. `review`: paid, but not as recorded (another
 * amount or currency) or for a key revoked meanwhile: held for the admin, who credits or rejects
 * it; a later event that matches still credits it. `credited` and `rejected` are final.
 */
export type CheckoutSession = {
  sessionId: string;
  keyId: string;
  package: string;
  credits: bigint;
  amountTotal: bigint;
  currency: string;
  state: 'open' | 'review' | 'credited' | 'rejected';
  /** Why it is (or was) held for review. */
  reviewReason?: ReviewReason;
  /** What Stripe said was paid, when it was not what was recorded. */
  paid?: { amount: bigint; currency: string };
  /** The session's Stripe PaymentIntent, once a checkout event named it: its refunds and disputes find the session by it. */
  paymentIntent?: string;
  /** Once the payment was refunded or disputed: see `Reversed`. */
  reversed?: Reversed;
  createdAt: number;
  updatedAt: number;
};
/**
 * What refunds and disputes of a session's payment took back. `refunded`, `disputed`: the refund
 * and dispute totals that Stripe's facts about the payment come to now (see `reversedOf`), in the
 * charge's minor units; `takenBack`: credits taken from the key's balance; `shortfall`: credits the
 * key had spent before they could be taken (the key is suspended). `takenBack + shortfall` never
 * exceeds the session's credits.
 */
export type Reversed = { refunded: bigint; disputed: bigint; takenBack: bigint; shortfall: bigint };
export type ReviewReason = 'amount_mismatch' | 'currency_mismatch' | 'key_revoked';

/** A paid checkout event as Stripe described it: what was paid, in Stripe's minor units, and by which PaymentIntent. */
export type CheckoutEvent = {
  eventId: string;
  type: string;
  sessionId: string;
  amountTotal: bigint;
  currency: string;
  paymentIntent?: string;
};

/** What a Stripe event did; only `credited` credited anything. */
export type StripeEventOutcome = 'credited' | 'duplicate_event' | 'duplicate_session' | 'unknown_session' | 'held_for_review' | 'ignored';

/**
 * One fact about a card payment's refunds or disputes as Stripe stated it, in the charge's minor
 * units, at `at` (the event's creation, s). Exactly one of: `refunded` (`charge.refunded`: the
 * cumulative `amount_refunded` of the charge's `amount` then), `refundFailed` (a refund that
 * failed: its id, amount and creation, s), `dispute` (by id: its `amount`, whether it is closed
 * and, if so, whether the funds were kept). `invoice`: the subscription invoice the payment paid,
 * when known from the event or Stripe.
 *
 * @example { eventId: 'evt_1', type: 'charge.refunded', paymentIntent: 'pi_1', at: 1_700_000_000, refunded: { amount: 500n, of: 1000n } }
 */
export type ReversalEvent = {
  eventId: string;
  type: string;
  paymentIntent: string;
  at: number;
  refunded?: { amount: bigint; of: bigint };
  refundFailed?: { refundId: string; amount: bigint; madeAt: number };
  dispute?: { id: string; amount: bigint; closed: boolean; kept: boolean };
  invoice?: string;
};
/**
 * What a refund or dispute did, to the credits of the session its PaymentIntent paid or to the
 * revenue booked for the subscription invoice it paid: `taken_back` (their share, from the
 * balance or the revenue), `shortfall` (the balance held less: all of it taken, the key
 * suspended, the rest recorded), `given_back` (a dispute closed with the funds kept, or a refund
 * that failed), `unchanged` (the share was taken already), `not_credited` (recorded on a session
 * not credited: crediting it later takes the share at once), `not_booked` (recorded for an
 * invoice whose revenue is not booked yet: booking it takes the share at once), `unattributed`
 * (no session nor invoice is known for that PaymentIntent: the fact is recorded, nothing taken),
 * `duplicate_event`.
 */
export type ReversalOutcome =
  | 'taken_back'
  | 'shortfall'
  | 'given_back'
  | 'unchanged'
  | 'not_credited'
  | 'not_booked'
  | 'unattributed'
  | 'duplicate_event';

/** What a PaymentIntent paid, as far as this store knows: a Checkout Session or a subscription invoice. */
export type PaymentOf = { session: string } | { invoice: string } | undefined;

/** The admin's decision on a session held for review: credit it (to its key, or the holder's replacement) or reject it. */
export type CheckoutResolution = { action: 'credit'; keyId?: string } | { action: 'reject' };
export type ResolveResult =
  | { ok: true; session: CheckoutSession; entry?: LedgerEntry }
  | { ok: false; reason: 'not_found' | 'not_in_review' | 'key_unusable'; session?: CheckoutSession };

export interface CreditStore {
  /**
   * Creates a key, funded by a first `topup` entry when `initial` is given; if that entry's
   * idempotency key was used already, nothing is created and the earlier entry is returned.
   */
  createKey(
    key: NewKey,
    initial?: Omit<Credit, 'keyId' | 'kind'>,
  ): Promise<{ created: true; key: KeyRecord } | { created: false; entry: LedgerEntry }>;
  keyByHash(hash: string): Promise<(KeyRecord & { hash: string }) | undefined>;
  key(id: string): Promise<KeyRecord | undefined>;
  /** Every key, or one operator's. */
  keys(filter?: { operatorId?: string }): Promise<KeyRecord[]>;
  /** `revoked` is final; returns undefined for an unknown key. */
  setStatus(id: string, status: KeyStatus): Promise<KeyRecord | undefined>;
  /** Sets (or clears, null) the balance below which a debit publishes `balance.low`; undefined for an unknown key. */
  setLowBalanceAlert(id: string, amount: bigint | null): Promise<KeyRecord | undefined>;
  /** Applies once per idempotency key; a repeat returns the first entry with `applied: false`. */
  credit(credit: Credit): Promise<{ applied: boolean; entry: LedgerEntry; balance: bigint }>;
  /**
   * An operator's correction (`adjustment`, either sign) or a move between two keys
   * (`transfer`: one entry on each, in one transaction); once per idempotency key, and refused
   * (nothing written) when it would take a balance below zero.
   */
  move(move: Move): Promise<MoveResult>;
  /**
   * Atomic check-and-debit of the key (and the token's budget, if any). Settles once the debit is
   * decided (committed: every writer sees it), which may be before it is on disk: nothing that
   * depends on it may be answered before `durable` resolves. A call can be forwarded meanwhile.
   */
  debit(debit: Debit): Promise<DebitResult & { durable: Promise<void> }>;
  /** Returns a debit in full (once), and forgets its idempotent request so a retry runs again. */
  refund(debitId: string, reason: string): Promise<{ balance: bigint }>;
  /** Marks debits whose calls were delivered: they stay charged. */
  closeDebits(debitIds: string[]): Promise<void>;
  /** Debits still open that were made before `before` (ms since the epoch), oldest first. */
  openDebits(before: number): Promise<string[]>;
  history(keyId: string, page: { limit: number; before?: string }): Promise<LedgerEntry[]>;
  /**
   * Counts one more request of a key in the window starting at `window` (ms) and returns the
   * count, atomically across every instance on the store; earlier windows are forgotten.
   */
  countRequest(keyId: string, window: number): Promise<bigint>;
  request(keyId: string, idempotencyKey: string): Promise<IdempotentRequest | undefined>;
  /**
   * Keeps the answer of an `Idempotency-Key` request for its replays. Committed without a sync of
   * its own (SQLite): the close of the charge it answered, written after it, makes it durable. A
   * power cut that loses it leaves that charge open as well, and the sweep that refunds an open
   * charge drops its request, so a retry runs again instead of replaying: the caller is never
   * charged twice nor left without a way to retry.
   */
  completeRequest(keyId: string, idempotencyKey: string, response: string): Promise<void>;

  createToken(token: Omit<BudgetToken, 'spent' | 'revokedAt'>): Promise<BudgetToken>;
  token(id: string): Promise<BudgetToken | undefined>;
  tokens(keyId: string): Promise<BudgetToken[]>;
  revokeToken(keyId: string, id: string): Promise<BudgetToken | undefined>;

  /**
   * Links an OAuth subject (an issuer's `sub`) to the key that pays for it, once per owner of keys
   * (the key's operator, or the instance for keys no operator made): a subject that owner already
   * linked stays with its key, whose id is returned (`linked: false`). Another operator's link of
   * the same subject is another link. The key must exist.
   */
  linkSubject(subject: OAuthSubject): Promise<{ linked: boolean; keyId: string }>;
  /**
   * The key a subject pays from on a server of `operatorId` (none: a server no operator
   * registered): that operator's link, else the instance's; never another operator's.
   */
  subjectKey(issuer: string, subject: string, operatorId?: string): Promise<string | undefined>;
  subjects(keyId: string): Promise<OAuthSubject[]>;
  /** Unlinks a subject from its key; false if it was not linked to that key. */
  unlinkSubject(subject: OAuthSubject): Promise<boolean>;

  recordCheckout(session: Omit<CheckoutSession, 'state' | 'reviewReason' | 'paid' | 'createdAt' | 'updatedAt'>): Promise<void>;
  /**
   * Credits a paid Checkout Session exactly once, deduplicated by event id and by session id, in
   * one transaction with the record of the event; holds it for review instead when the amount or
   * currency paid is not what was recorded, or its key was revoked.
   */
  completeCheckout(event: CheckoutEvent): Promise<StripeEventOutcome>;
  /** Sessions in a state (`shortfall`: those whose reversal the key's balance could not cover), oldest change first. */
  checkouts(state: CheckoutSession['state'] | 'shortfall', limit: number): Promise<CheckoutSession[]>;
  /** The admin's decision on a session in review, once: crediting is the session's one top-up (idempotency key `stripe:<session>`). */
  resolveCheckout(sessionId: string, resolution: CheckoutResolution): Promise<ResolveResult>;
  /**
   * Records a fact about a payment's refunds or disputes and brings what was taken back in line
   * with all the facts about it, whatever the order or number of deliveries (see `reversedOf`):
   * the credits of the session its PaymentIntent paid, or the revenue booked for the subscription
   * invoice it paid (`event.invoice`, or one linked before), in proportion to the share of the
   * payment refunded plus disputed, rounded down, in one transaction with the record of the
   * event: once per event, and never more in all than the session credited (the invoice booked).
   * What the balance cannot cover is recorded as the session's shortfall and the key is suspended.
   */
  reverseCheckout(event: ReversalEvent): Promise<ReversalOutcome>;
  /** What a PaymentIntent paid, as far as this store knows (a session, or an invoice a reversal or booking linked it to). */
  paymentOf(paymentIntent: string): Promise<PaymentOf>;
  /**
   * Once a subscription invoice's revenue is booked (the charge `stripe:<invoice>`): links the
   * PaymentIntents the event named to it and takes back the share of it that the refunds and
   * disputes recorded for its payments come to (see `reverseCheckout`).
   */
  restateInvoice(invoiceId: string, paymentIntents: readonly string[]): Promise<ReversalOutcome>;
  /** Records an event that needs no action, so its redelivery is recognised too. */
  ignoreEvent(event: { eventId: string; type: string }): Promise<void>;
}
