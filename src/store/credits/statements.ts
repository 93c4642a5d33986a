import { utcDay } from '../../rails/credits/rules.js';
import { command, query } from '../engine/statement.js';
import type {
  BudgetToken,
  CheckoutSession,
  IdempotentRequest,
  KeyRecord,
  LedgerEntry,
  OAuthSubject,
  ReviewReason,
  Scope,
} from './credits.js';

/** The credits tables' rows as both backends return them (BIGINT as bigint). */
export type KeyRow = {
  id: string;
  hash: string;
  name: string;
  balance: bigint;
  scope: string | null;
  expires_at: bigint | null;
  lifetime_limit: bigint | null;
  daily_limit: bigint | null;
  spent_total: bigint;
  spent_day: bigint;
  day: bigint;
  status: KeyRecord['status'];
  operator_id: string | null;
  low_balance_alert: bigint | null;
  created_at: bigint;
  updated_at: bigint;
};
export type EntryRow = {
  id: string;
  key_id: string;
  kind: LedgerEntry['kind'];
  amount: bigint;
  balance_after: bigint;
  reason: string;
  idempotency_key: string;
  token_id: string | null;
  ref: string | null;
  created_at: bigint;
};
export type TokenRow = {
  id: string;
  key_id: string;
  cap: bigint;
  spent: bigint;
  scope: string | null;
  expires_at: bigint;
  revoked_at: bigint | null;
  created_at: bigint;
};
export type CheckoutRow = {
  session_id: string;
  key_id: string;
  package: string;
  credits: bigint;
  amount_total: bigint;
  currency: string;
  state: CheckoutSession['state'];
  review_reason: ReviewReason | null;
  paid_amount: bigint | null;
  paid_currency: string | null;
  created_at: bigint;
  updated_at: bigint;
  payment_intent: string | null;
  charged: bigint | null;
  refunded: bigint;
  disputed: bigint;
  taken_back: bigint;
  shortfall: bigint;
};

export const toCheckout = (r: CheckoutRow): CheckoutSession => ({
  sessionId: r.session_id,
  keyId: r.key_id,
  package: r.package,
  credits: r.credits,
  amountTotal: r.amount_total,
  currency: r.currency,
  state: r.state,
  ...(r.review_reason ? { reviewReason: r.review_reason } : {}),
  ...(r.paid_amount !== null ? { paid: { amount: r.paid_amount, currency: r.paid_currency ?? '' } } : {}),
  ...(r.payment_intent !== null ? { paymentIntent: r.payment_intent } : {}),
  ...(r.refunded > 0n || r.disputed > 0n || r.taken_back > 0n || r.shortfall > 0n
    ? { reversed: { refunded: r.refunded, disputed: r.disputed, takenBack: r.taken_back, shortfall: r.shortfall } }
    : {}),
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});
export type RefundStateRow = { refunded: bigint; charge_amount: bigint; stated_at: bigint };
export type FailedRefundRow = { amount: bigint; made_at: bigint; failed_at: bigint };
export type DisputeRow = { amount: bigint; kept: bigint | number };
export type InvoiceRow = { booked: bigint | null; booked_share: bigint | null };
export type RequestRow = { body_hash: string; debit_id: string | null; usage_id: string | null; response: string | null };
export type SubjectRow = { operator_id: string; issuer: string; subject: string; key_id: string; created_at: bigint };

export const json = (value: unknown) => (value === undefined ? null : JSON.stringify(value));

export function toKey(r: KeyRow, now = Date.now()): KeyRecord {
  return {
    id: r.id,
    name: r.name,
    balance: r.balance,
    ...(r.scope ? { scope: JSON.parse(r.scope) as Scope } : {}),
    ...(r.expires_at !== null ? { expiresAt: Number(r.expires_at) } : {}),
    ...(r.lifetime_limit !== null ? { lifetimeLimit: r.lifetime_limit } : {}),
    ...(r.daily_limit !== null ? { dailyLimit: r.daily_limit } : {}),
    spentTotal: r.spent_total,
    spentToday: r.day === utcDay(now) ? r.spent_day : 0n,
    status: r.status,
    ...(r.operator_id ? { operatorId: r.operator_id } : {}),
    ...(r.low_balance_alert != null ? { lowBalanceAlert: r.low_balance_alert } : {}),
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

export function toEntry(r: EntryRow): LedgerEntry {
  return {
    id: r.id,
    keyId: r.key_id,
    kind: r.kind,
    amount: r.amount,
    balanceAfter: r.balance_after,
    reason: r.reason,
    idempotencyKey: r.idempotency_key,
    ...(r.token_id ? { tokenId: r.token_id } : {}),
    ...(r.ref ? { ref: JSON.parse(r.ref) as Record<string, unknown> } : {}),
    createdAt: Number(r.created_at),
  };
}

export function toToken(r: TokenRow): BudgetToken {
  return {
    id: r.id,
    keyId: r.key_id,
    cap: r.cap,
    spent: r.spent,
    ...(r.scope ? { scope: JSON.parse(r.scope) as Scope } : {}),
    expiresAt: Number(r.expires_at),
    ...(r.revoked_at !== null ? { revokedAt: Number(r.revoked_at) } : {}),
    createdAt: Number(r.created_at),
  };
}

export const toSubject = (r: SubjectRow): OAuthSubject => ({
  issuer: r.issuer,
  subject: r.subject,
  keyId: r.key_id,
  createdAt: Number(r.created_at),
});

export const toRequest = (r: RequestRow): IdempotentRequest => ({
  bodyHash: r.body_hash,
  ...(r.debit_id !== null ? { debitId: r.debit_id } : {}),
  ...(r.usage_id !== null ? { usageId: r.usage_id } : {}),
  ...(r.response !== null ? { response: r.response } : {}),
});

type KeyId = { id: string };
type Now = { now: number };
/** An OAuth caller: an issuer's `sub`. */
type Subject = { issuer: string; subject: string };
/** Whose links: an operator's id, or '' for the instance's own keys (those no operator made). */
type Owner = { operatorId: string };
/** The new balance, answered by a balance change: the ledger entry records it, and reading it back would be one more statement (one more round trip on PostgreSQL) per debit. */
type BalanceRow = { balance: bigint };
type EntryParams = Now & {
  id: string;
  keyId: string;
  kind: LedgerEntry['kind'];
  amount: bigint;
  balanceAfter: bigint;
  reason: string;
  idempotencyKey: string;
  tokenId: string | null;
  ref: string | null;
};

/**
 * The ledger's statements, for both backends. The lockable ones are the rows a check is about:
 * PostgreSQL reads them `FOR NO KEY UPDATE` when an operation locks them.
 */
export const creditsSql = {
  keyById: query<KeyId, KeyRow>('SELECT * FROM api_keys WHERE id = @id', { lockable: true }),
  keyByHash: query<{ hash: string }, KeyRow>('SELECT * FROM api_keys WHERE hash = @hash'),
  // The comparison before `IS NULL`: PostgreSQL types a parameter where it first meets it.
  allKeys: query<{ operatorId: string | null }, KeyRow>(
    'SELECT * FROM api_keys WHERE operator_id = @operatorId OR @operatorId IS NULL ORDER BY created_at, id',
  ),
  balanceOf: query<KeyId, BalanceRow>('SELECT balance FROM api_keys WHERE id = @id', { lockable: true }),
  insertKey: command<
    KeyId &
      Now & {
        hash: string;
        name: string;
        scope: string | null;
        expiresAt: number | null;
        lifetimeLimit: bigint | null;
        dailyLimit: bigint | null;
        operatorId: string | null;
      }
  >(`
    INSERT INTO api_keys (id, hash, name, scope, expires_at, lifetime_limit, daily_limit, operator_id, created_at, updated_at)
    VALUES (@id, @hash, @name, @scope, @expiresAt, @lifetimeLimit, @dailyLimit, @operatorId, @now, @now)`),
  setLowBalanceAlert: command<KeyId & Now & { amount: bigint | null }>(
    'UPDATE api_keys SET low_balance_alert = @amount, updated_at = @now WHERE id = @id',
  ),
  setStatus: command<KeyId & Now & { status: KeyRecord['status'] }>(
    `UPDATE api_keys SET status = @status, updated_at = @now WHERE id = @id AND status <> 'revoked'`,
  ),
  addBalance: query<KeyId & Now & { amount: bigint }, BalanceRow>(
    'UPDATE api_keys SET balance = balance + @amount, updated_at = @now WHERE id = @id RETURNING balance',
  ),
  spend: query<KeyId & Now & { amount: bigint; day: bigint }, BalanceRow>(`
    UPDATE api_keys SET balance = balance - @amount, spent_total = spent_total + @amount,
                        spent_day = CASE WHEN day = @day THEN spent_day + @amount ELSE @amount END,
                        day = @day, updated_at = @now
    WHERE id = @id AND balance >= @amount RETURNING balance`),
  // CASE rather than MAX/GREATEST: the one spelling of "not below zero" both backends read.
  unspend: query<KeyId & Now & { amount: bigint; day: bigint }, BalanceRow>(`
    UPDATE api_keys SET balance = balance + @amount,
                        spent_total = CASE WHEN spent_total > @amount THEN spent_total - @amount ELSE 0 END,
                        spent_day = CASE WHEN day <> @day THEN spent_day WHEN spent_day > @amount THEN spent_day - @amount ELSE 0 END,
                        updated_at = @now
    WHERE id = @id RETURNING balance`),

  entryById: query<KeyId, EntryRow>('SELECT * FROM ledger WHERE id = @id'),
  entryByIdempotency: query<{ idempotencyKey: string }, EntryRow>('SELECT * FROM ledger WHERE idempotency_key = @idempotencyKey'),
  insertEntry: command<EntryParams>(`
    INSERT INTO ledger (id, key_id, kind, amount, balance_after, reason, idempotency_key, token_id, ref, created_at)
    VALUES (@id, @keyId, @kind, @amount, @balanceAfter, @reason, @idempotencyKey, @tokenId, @ref, @now)`),
  page: query<{ keyId: string; limit: number; before: string | null }, EntryRow>(`
    SELECT * FROM ledger WHERE key_id = @keyId AND (id < @before OR @before IS NULL)
    ORDER BY id DESC LIMIT @limit`),

  openDebit: command<Now & { debitId: string }>('INSERT INTO open_debits (debit_id, created_at) VALUES (@debitId, @now)'),
  closeDebit: command<{ debitId: string }>('DELETE FROM open_debits WHERE debit_id = @debitId'),
  openBefore: query<{ before: number }, { debit_id: string }>(
    'SELECT debit_id FROM open_debits WHERE created_at < @before ORDER BY created_at',
  ),

  insertRequest: command<Now & { keyId: string; idempotencyKey: string; bodyHash: string; debitId: string }>(`
    INSERT INTO idempotent_requests (key_id, idempotency_key, body_hash, debit_id, created_at)
    VALUES (@keyId, @idempotencyKey, @bodyHash, @debitId, @now) ON CONFLICT DO NOTHING`),
  completeRequest: command<{ keyId: string; idempotencyKey: string; response: string }>(
    'UPDATE idempotent_requests SET response = @response WHERE key_id = @keyId AND idempotency_key = @idempotencyKey',
  ),
  dropRequestOf: command<{ debitId: string }>('DELETE FROM idempotent_requests WHERE debit_id = @debitId'),
  requestByKey: query<{ keyId: string; idempotencyKey: string }, RequestRow>(
    'SELECT body_hash, debit_id, usage_id, response FROM idempotent_requests WHERE key_id = @keyId AND idempotency_key = @idempotencyKey',
  ),

  tokenById: query<KeyId, TokenRow>('SELECT * FROM budget_tokens WHERE id = @id'),
  tokensOf: query<{ keyId: string }, TokenRow>('SELECT * FROM budget_tokens WHERE key_id = @keyId ORDER BY created_at DESC'),
  insertToken: command<KeyId & Now & { keyId: string; cap: bigint; scope: string | null; expiresAt: number }>(`
    INSERT INTO budget_tokens (id, key_id, cap, scope, expires_at, created_at)
    VALUES (@id, @keyId, @cap, @scope, @expiresAt, @now)`),
  spendToken: command<KeyId & { amount: bigint }>(
    'UPDATE budget_tokens SET spent = spent + @amount WHERE id = @id AND spent + @amount <= cap',
  ),
  unspendToken: command<KeyId & { amount: bigint }>(
    'UPDATE budget_tokens SET spent = CASE WHEN spent > @amount THEN spent - @amount ELSE 0 END WHERE id = @id',
  ),
  revokeToken: command<KeyId & Now & { keyId: string }>(
    'UPDATE budget_tokens SET revoked_at = @now WHERE id = @id AND key_id = @keyId AND revoked_at IS NULL',
  ),

  // On a server of `operatorId` ('' for one no operator registered): that operator's link first, else the instance's.
  subjectKey: query<Subject & Owner, { key_id: string }>(`
    SELECT key_id FROM oauth_subjects WHERE issuer = @issuer AND subject = @subject AND operator_id IN (@operatorId, '')
    ORDER BY CASE WHEN operator_id = '' THEN 1 ELSE 0 END LIMIT 1`),
  /** The key a subject is linked to among the links of the operator of `keyId`. */
  linkedKey: query<Subject & { keyId: string }, { key_id: string }>(`
    SELECT s.key_id FROM oauth_subjects s JOIN api_keys k ON k.id = @keyId
    WHERE s.operator_id = COALESCE(k.operator_id, '') AND s.issuer = @issuer AND s.subject = @subject`),
  subjectsOf: query<{ keyId: string }, SubjectRow>(
    'SELECT * FROM oauth_subjects WHERE key_id = @keyId ORDER BY created_at, issuer, subject',
  ),
  // The link belongs to its key's operator, read from the key itself: nobody can file a link under another operator.
  linkSubject: command<Subject & Now & { keyId: string }>(`
    INSERT INTO oauth_subjects (operator_id, issuer, subject, key_id, created_at)
    SELECT COALESCE(operator_id, ''), @issuer, @subject, id, @now FROM api_keys WHERE id = @keyId
    ON CONFLICT (operator_id, issuer, subject) DO NOTHING`),
  unlinkSubject: command<Subject & { keyId: string }>(
    'DELETE FROM oauth_subjects WHERE issuer = @issuer AND subject = @subject AND key_id = @keyId',
  ),

  insertCheckout: command<
    Now & { sessionId: string; keyId: string; package: string; credits: bigint; amountTotal: bigint; currency: string }
  >(`
    INSERT INTO checkout_sessions (session_id, key_id, package, credits, amount_total, currency, state, created_at, updated_at)
    VALUES (@sessionId, @keyId, @package, @credits, @amountTotal, @currency, 'open', @now, @now)`),
  checkoutById: query<{ sessionId: string }, CheckoutRow>('SELECT * FROM checkout_sessions WHERE session_id = @sessionId', {
    lockable: true,
  }),
  checkoutByIntent: query<{ paymentIntent: string }, CheckoutRow>('SELECT * FROM checkout_sessions WHERE payment_intent = @paymentIntent', {
    lockable: true,
  }),
  setPaymentIntent: command<{ sessionId: string; paymentIntent: string }>(
    'UPDATE checkout_sessions SET payment_intent = @paymentIntent WHERE session_id = @sessionId AND payment_intent IS NULL',
  ),
  setCharged: command<{ sessionId: string; charged: bigint }>(
    'UPDATE checkout_sessions SET charged = @charged WHERE session_id = @sessionId',
  ),
  setReversal: command<Now & { sessionId: string; refunded: bigint; disputed: bigint; takenBack: bigint; shortfall: bigint }>(`
    UPDATE checkout_sessions SET refunded = @refunded, disputed = @disputed, taken_back = @takenBack, shortfall = @shortfall,
      updated_at = @now
    WHERE session_id = @sessionId`),
  shortfalls: query<{ limit: number }, CheckoutRow>(
    'SELECT * FROM checkout_sessions WHERE shortfall > 0 ORDER BY updated_at, session_id LIMIT @limit',
  ),
  /** The key a session's one top-up went to: its own, or the replacement the admin chose. */
  creditedKey: query<{ idempotencyKey: string }, { key_id: string }>('SELECT key_id FROM ledger WHERE idempotency_key = @idempotencyKey'),
  setCheckoutState: command<Now & { sessionId: string; state: CheckoutSession['state'] }>(
    'UPDATE checkout_sessions SET state = @state, updated_at = @now WHERE session_id = @sessionId',
  ),
  holdCheckout: command<Now & { sessionId: string; reason: ReviewReason; paidAmount: bigint | null; paidCurrency: string | null }>(`
    UPDATE checkout_sessions SET state = 'review', review_reason = @reason, paid_amount = @paidAmount, paid_currency = @paidCurrency,
      updated_at = @now
    WHERE session_id = @sessionId`),
  checkoutsIn: query<{ state: CheckoutSession['state']; limit: number }, CheckoutRow>(
    'SELECT * FROM checkout_sessions WHERE state = @state ORDER BY updated_at, session_id LIMIT @limit',
  ),
  // What Stripe said of a payment's refunds and disputes (migration 25), each fact once.
  insertRefundState: command<{ eventId: string; paymentIntent: string; refunded: bigint; chargeAmount: bigint; at: number }>(`
    INSERT INTO stripe_refund_states (event_id, payment_intent, refunded, charge_amount, stated_at)
    VALUES (@eventId, @paymentIntent, @refunded, @chargeAmount, @at) ON CONFLICT (event_id) DO NOTHING`),
  // A refund's failure stated by several events (charge.refund.updated, refund.updated, refund.failed…) failed by the earliest.
  insertFailedRefund: command<{ refundId: string; paymentIntent: string; amount: bigint; madeAt: number; at: number }>(`
    INSERT INTO stripe_failed_refunds (refund_id, payment_intent, amount, made_at, failed_at)
    VALUES (@refundId, @paymentIntent, @amount, @madeAt, @at)
    ON CONFLICT (refund_id) DO UPDATE SET failed_at = excluded.failed_at WHERE excluded.failed_at < stripe_failed_refunds.failed_at`),
  // A closed dispute is final: a created or updated event delivered after its close changes nothing.
  saveDispute: command<Now & { disputeId: string; paymentIntent: string; amount: bigint; closed: number; kept: number }>(`
    INSERT INTO stripe_disputes (dispute_id, payment_intent, amount, closed, kept, updated_at)
    VALUES (@disputeId, @paymentIntent, @amount, @closed, @kept, @now)
    ON CONFLICT (dispute_id) DO UPDATE SET amount = excluded.amount, closed = excluded.closed, kept = excluded.kept,
      updated_at = excluded.updated_at
    WHERE stripe_disputes.closed = 0`),
  // A session's dispute from before disputes were kept by id (migrations 25, 26) is the one the next dispute event of its
  // payment names; once closed, only one stated (at, s) before its close (updated_at, ms): a later one is a dispute of its own.
  adoptLegacyDispute: command<{ paymentIntent: string; disputeId: string; at: number }>(`
    UPDATE stripe_disputes SET dispute_id = @disputeId
    WHERE dispute_id = 'legacy:' || @paymentIntent AND (closed = 0 OR @at < updated_at / 1000)`),
  refundStates: query<{ paymentIntent: string }, RefundStateRow>(
    'SELECT refunded, charge_amount, stated_at FROM stripe_refund_states WHERE payment_intent = @paymentIntent',
  ),
  failedRefunds: query<{ paymentIntent: string }, FailedRefundRow>(
    'SELECT amount, made_at, failed_at FROM stripe_failed_refunds WHERE payment_intent = @paymentIntent',
  ),
  disputes: query<{ paymentIntent: string }, DisputeRow>('SELECT amount, kept FROM stripe_disputes WHERE payment_intent = @paymentIntent'),
  linkInvoice: command<{ paymentIntent: string; invoiceId: string }>(`
    INSERT INTO stripe_invoice_payments (payment_intent, invoice_id) VALUES (@paymentIntent, @invoiceId)
    ON CONFLICT (payment_intent) DO NOTHING`),
  invoiceOfIntent: query<{ paymentIntent: string }, { invoice_id: string }>(
    'SELECT invoice_id FROM stripe_invoice_payments WHERE payment_intent = @paymentIntent',
  ),
  intentsOfInvoice: query<{ invoiceId: string }, { payment_intent: string }>(
    'SELECT payment_intent FROM stripe_invoice_payments WHERE invoice_id = @invoiceId ORDER BY payment_intent',
  ),
  // Taken first by a reversal of a payment and by the checkout event or invoice booking naming it: they queue here, so the
  // reversal finds the session or invoice the other links, or the other's crediting or restatement finds the reversal's facts.
  lockPayment: command<Now & { paymentIntent: string }>(`
    INSERT INTO stripe_payments (payment_intent, updated_at) VALUES (@paymentIntent, @now)
    ON CONFLICT (payment_intent) DO UPDATE SET updated_at = excluded.updated_at`),
  // Taken first by a reversal of an invoice's payment and by its booking: the two queue here, so one sees the other.
  lockInvoice: query<Now & { invoiceId: string }, InvoiceRow>(`
    INSERT INTO stripe_invoices (invoice_id, updated_at) VALUES (@invoiceId, @now)
    ON CONFLICT (invoice_id) DO UPDATE SET updated_at = excluded.updated_at
    RETURNING booked, booked_share`),
  setBooked: command<{ invoiceId: string; booked: bigint; bookedShare: bigint }>(
    'UPDATE stripe_invoices SET booked = @booked, booked_share = @bookedShare WHERE invoice_id = @invoiceId',
  ),
  invoiceCharge: query<{ ref: string }, { amount: bigint; operator_share: bigint }>(
    'SELECT amount, operator_share FROM charges WHERE ref = @ref',
  ),
  restateCharge: command<{ ref: string; amount: bigint; operatorShare: bigint; platformShare: bigint }>(
    'UPDATE charges SET amount = @amount, operator_share = @operatorShare, platform_share = @platformShare WHERE ref = @ref',
  ),
  insertEvent: command<Now & { eventId: string; type: string; sessionId: string | null; outcome: string }>(`
    INSERT INTO stripe_events (event_id, type, session_id, outcome, received_at)
    VALUES (@eventId, @type, @sessionId, @outcome, @now) ON CONFLICT (event_id) DO NOTHING`),
  setEventOutcome: command<{ eventId: string; outcome: string }>('UPDATE stripe_events SET outcome = @outcome WHERE event_id = @eventId'),
  countRequest: query<{ keyId: string; window: number }, { count: bigint }>(`
    INSERT INTO request_counts (key_id, window_start, count) VALUES (@keyId, @window, 1)
    ON CONFLICT (key_id, window_start) DO UPDATE SET count = request_counts.count + 1 RETURNING count`),
  forgetWindows: command<{ keyId: string; window: number }>('DELETE FROM request_counts WHERE key_id = @keyId AND window_start < @window'),
};

/** A concurrent writer committed an entry under the same idempotency key first (PostgreSQL's name for the unique index). */
export const contested = ['ledger_idempotency_key_key'] as const;
