import type {
  BudgetToken,
  CheckoutResolution,
  CheckoutSession,
  Credit,
  CreditStore,
  Debit,
  DebitResult,
  KeyStatus,
  LedgerEntry,
  Move,
  MoveResult,
  NewKey,
  PaymentOf,
  ResolveResult,
  ReversalEvent,
  ReversalOutcome,
  ReviewReason,
  StripeEventOutcome,
} from './credits.js';
import { type Op, type Runner, all, get, lock, run } from '../engine/statement.js';
import { newId } from '../ids.js';
import { debitVerdict, utcDay } from '../../rails/credits/rules.js';
import { CENT } from '../../pricing/pricing.js';
import { StoreError } from '../store.js';
import {
  type CheckoutRow,
  type EntryRow,
  creditsSql as sql,
  json,
  toCheckout,
  toEntry,
  toKey,
  toRequest,
  toSubject,
  toToken,
} from './statements.js';

/** Rolls back a charge (a debit, a usage entry) whose Idempotency-Key another request took first. */
export class RequestTaken extends Error {}

/** A decided charge with its `durable`; one whose Idempotency-Key another request took first: `request_in_progress`, nothing written. */
export function unlessTaken<T extends object>(decided: Promise<{ value: T; durable: Promise<void> }>) {
  return decided.then(
    ({ value, durable }) => ({ ...value, durable }),
    (error: unknown) => {
      if (error instanceof RequestTaken) return { ok: false as const, reason: 'request_in_progress' as const, durable: Promise.resolve() };
      throw error;
    },
  );
}

/** Applies a balance change (`addBalance`, `spend`, `unspend`: each answers the new balance) and appends its ledger entry. */
function* change(
  balanceChange: Op<{ balance: bigint } | undefined>,
  entry: Omit<LedgerEntry, 'id' | 'balanceAfter' | 'createdAt'>,
  now: number,
): Op<LedgerEntry> {
  const key = yield* balanceChange;
  if (!key) throw new StoreError(`credits: cannot change the balance of key ${entry.keyId}`);
  const id = newId('le');
  yield* run(sql.insertEntry, { id, ...entry, balanceAfter: key.balance, tokenId: entry.tokenId ?? null, ref: json(entry.ref), now });
  return { ...entry, id, balanceAfter: key.balance, createdAt: now };
}

/** Applies a credit once per idempotency key. */
function* applyCredit(credit: Credit, now: number): Op<{ applied: boolean; entry: LedgerEntry; balance: bigint }> {
  const key = yield* lock(sql.balanceOf, { id: credit.keyId });
  const earlier = yield* get(sql.entryByIdempotency, { idempotencyKey: credit.idempotencyKey });
  if (earlier) return { applied: false, entry: toEntry(earlier), balance: key?.balance ?? 0n };
  const entry = yield* change(
    get(sql.addBalance, { id: credit.keyId, amount: credit.amount, now }),
    {
      keyId: credit.keyId,
      kind: credit.kind,
      amount: credit.amount,
      reason: credit.reason,
      idempotencyKey: credit.idempotencyKey,
      ref: credit.ref,
    },
    now,
  );
  return { applied: true, entry, balance: entry.balanceAfter };
}

function* createKey(key: NewKey, initial?: Omit<Credit, 'keyId' | 'kind'>) {
  const now = Date.now();
  if (initial) {
    const earlier = yield* get(sql.entryByIdempotency, { idempotencyKey: initial.idempotencyKey });
    if (earlier) return { created: false as const, entry: toEntry(earlier) };
  }
  yield* run(sql.insertKey, {
    id: key.id,
    hash: key.hash,
    name: key.name,
    scope: json(key.scope),
    expiresAt: key.expiresAt ?? null,
    lifetimeLimit: key.lifetimeLimit ?? null,
    dailyLimit: key.dailyLimit ?? null,
    operatorId: key.operatorId ?? null,
    now,
  });
  // Not applyCredit: its look for an earlier entry would, under READ COMMITTED, find a concurrent
  // twin's committed entry and skip the credit, leaving a second key with nothing on it. Inserting
  // the entry outright makes the twin meet the ledger's unique index instead, and the runner rolls
  // this key back and runs again, which then answers `created: false` from the look above.
  if (initial && initial.amount > 0n) {
    const { amount, reason, idempotencyKey, ref } = initial;
    yield* change(
      get(sql.addBalance, { id: key.id, amount, now }),
      { keyId: key.id, kind: 'topup', amount, reason, idempotencyKey, ref },
      now,
    );
  }
  return { created: true as const, key: toKey((yield* get(sql.keyById, { id: key.id }))!, now) };
}

/** Takes `amount` from `from` and/or gives it to `to`: a transfer with both, an adjustment with one. */
function* move(move: Move): Op<MoveResult> {
  const now = Date.now();
  const sides = [
    ...(move.from ? [{ keyId: move.from, amount: -move.amount, suffix: move.to ? ':out' : '' }] : []),
    ...(move.to ? [{ keyId: move.to, amount: move.amount, suffix: move.from ? ':in' : '' }] : []),
  ];
  // In id order: two opposite transfers lock their keys in the same order and cannot deadlock.
  const balances = new Map<string, bigint | undefined>();
  for (const id of sides.map((s) => s.keyId).sort()) balances.set(id, (yield* lock(sql.balanceOf, { id }))?.balance);
  const earlier: (EntryRow | undefined)[] = [];
  for (const side of sides) earlier.push(yield* get(sql.entryByIdempotency, { idempotencyKey: `${move.idempotencyKey}${side.suffix}` }));
  if (earlier.every(Boolean)) return { ok: true, applied: false, entries: earlier.map((e) => toEntry(e!)) };
  for (const side of sides) {
    const balance = balances.get(side.keyId);
    if (balance === undefined) return { ok: false, reason: 'key_unknown', keyId: side.keyId };
    if (balance + side.amount < 0n) return { ok: false, reason: 'insufficient_balance', keyId: side.keyId, balance };
  }
  const kind = move.from && move.to ? 'transfer' : 'adjustment';
  const ref = move.from && move.to ? { from: move.from, to: move.to } : undefined;
  const entries: LedgerEntry[] = [];
  for (const side of sides) {
    const entry = {
      keyId: side.keyId,
      kind,
      amount: side.amount,
      reason: move.reason,
      idempotencyKey: `${move.idempotencyKey}${side.suffix}`,
      ref,
    } as const;
    entries.push(yield* change(get(sql.addBalance, { id: side.keyId, amount: side.amount, now }), entry, now));
  }
  return { ok: true, applied: true, entries };
}

function* debit(debit: Debit): Op<DebitResult> {
  const now = Date.now();
  // Locked: the rules and the spend cannot interleave with another debit of this key, nor of its
  // tokens (a token spends only through debits of its key).
  const row = yield* lock(sql.keyById, { id: debit.keyId });
  if (!row) return { ok: false, reason: 'key_unknown' };
  const token = debit.tokenId ? yield* get(sql.tokenById, { id: debit.tokenId }) : undefined;
  const verdict = debitVerdict(toKey(row, now), debit.tokenId ? (token ? toToken(token) : 'unknown') : undefined, debit.amount, now);
  if (!verdict.ok) return verdict;
  const { tokenRemaining } = verdict;
  const day = utcDay(now);

  const entry = yield* change(
    get(sql.spend, { id: debit.keyId, amount: debit.amount, day, now }),
    {
      keyId: debit.keyId,
      kind: 'debit',
      amount: -debit.amount,
      reason: debit.reason,
      idempotencyKey: debit.idempotencyKey,
      tokenId: debit.tokenId,
      ref: debit.ref,
    },
    now,
  );
  if (debit.tokenId) yield* run(sql.spendToken, { id: debit.tokenId, amount: debit.amount });
  if (debit.open) yield* run(sql.openDebit, { debitId: entry.id, now });
  // Another request with this Idempotency-Key got in first: this debit must not happen.
  if (debit.request && (yield* run(sql.insertRequest, { keyId: debit.keyId, ...debit.request, debitId: entry.id, now })) === 0)
    throw new RequestTaken();
  const alert = row.low_balance_alert;
  return {
    ok: true,
    entry,
    balance: entry.balanceAfter,
    ...(tokenRemaining !== undefined ? { tokenRemaining } : {}),
    ...(alert != null ? { lowBalanceAlert: alert } : {}),
  };
}

function* refund(debitId: string, reason: string): Op<{ balance: bigint }> {
  const now = Date.now();
  const debit = yield* get(sql.entryById, { id: debitId });
  if (debit?.kind !== 'debit') throw new Error(`ledger entry ${debitId} is not a debit`);
  const key = (yield* lock(sql.balanceOf, { id: debit.key_id }))!;
  yield* run(sql.dropRequestOf, { debitId });
  yield* run(sql.closeDebit, { debitId });
  const idempotencyKey = `refund:${debitId}`;
  if (yield* get(sql.entryByIdempotency, { idempotencyKey })) return { balance: key.balance };
  const amount = -debit.amount;
  const entry = yield* change(
    get(sql.unspend, { id: debit.key_id, amount, day: utcDay(Number(debit.created_at)), now }),
    { keyId: debit.key_id, kind: 'refund', amount, reason, idempotencyKey, tokenId: debit.token_id ?? undefined, ref: { debit: debitId } },
    now,
  );
  if (debit.token_id) yield* run(sql.unspendToken, { id: debit.token_id, amount });
  return { balance: entry.balanceAfter };
}

type StripeEvent = { eventId: string; type: string; sessionId: string; amountTotal: bigint; currency: string; paymentIntent?: string };

/**
 * The credits a session's refunds and disputes take back: the share `lost` is of what was
 * `charged` (both in the charge's minor units, `lost` capped at `charged`), rounded down, so a
 * partial refund never takes back more than its exact share (the buyer keeps the fraction of a
 * micro-USD), and a full refund takes back every credit.
 *
 * @example takenShare(10_000_000n, 1000n, 333n) // 3_330_000n
 * @example takenShare(10_000_000n, 3n, 1n) // 3_333_333n
 */
export function takenShare(credits: bigint, charged: bigint, lost: bigint): bigint {
  if (charged <= 0n || lost <= 0n) return 0n;
  return (credits * (lost < charged ? lost : charged)) / charged;
}

/**
 * Brings what a credited (locked) session took back in line with its payment's `refunded` plus
 * `disputed` share: takes the difference from the key's balance, as far as it goes (the rest is
 * the session's shortfall, and the key is suspended), or gives back what a refund that failed or a
 * dispute closed with the funds kept had taken (what was short first). One ledger entry under `idempotencyKey`.
 */
function* settle(
  session: CheckoutRow,
  keyId: string,
  next: { refunded: bigint; disputed: bigint },
  idempotencyKey: string,
  now: number,
): Op<'taken_back' | 'shortfall' | 'given_back' | 'unchanged'> {
  const charged = session.charged ?? session.amount_total;
  const target = takenShare(session.credits, charged, next.refunded + next.disputed);
  let takenBack = session.taken_back;
  let shortfall = session.shortfall;
  const settled = takenBack + shortfall;
  const ref = { stripeSession: session.session_id, refunded: next.refunded.toString(), disputed: next.disputed.toString() };
  const entry = (amount: bigint, reason: string) =>
    change(get(sql.addBalance, { id: keyId, amount, now }), { keyId, kind: 'adjustment', amount, reason, idempotencyKey, ref }, now);
  let outcome: 'taken_back' | 'shortfall' | 'given_back' | 'unchanged' = 'unchanged';
  if (target > settled) {
    const due = target - settled;
    const balance = (yield* lock(sql.balanceOf, { id: keyId }))?.balance ?? 0n;
    const take = due < balance ? due : balance;
    if (take > 0n) yield* entry(-take, `Stripe refund or dispute, Checkout Session ${session.session_id}`);
    takenBack += take;
    shortfall += due - take;
    if (due > take) yield* run(sql.setStatus, { id: keyId, status: 'suspended', now });
    outcome = due > take ? 'shortfall' : 'taken_back';
  } else if (target < settled) {
    const over = settled - target;
    // biome-ignore lint/complexity/useMathMinMax: bigints (Math.min takes numbers)
    const forgiven = over < shortfall ? over : shortfall;
    const give = over - forgiven;
    if (give > 0n) yield* entry(give, `Stripe refund failed or dispute closed, funds kept: Checkout Session ${session.session_id}`);
    takenBack -= give;
    shortfall -= forgiven;
    outcome = 'given_back';
  }
  yield* run(sql.setReversal, { sessionId: session.session_id, ...next, takenBack, shortfall, now });
  return outcome;
}

/**
 * Credits a session's package to a key (its own, or the admin's choice): the session's one
 * top-up, whoever asks; `charged`: what Stripe charged for it. A refund or dispute recorded before
 * it was credited takes its share back at once.
 */
function* creditSession(session: CheckoutRow, keyId: string, ref: Record<string, unknown>, charged: bigint, now: number) {
  const credited = yield* applyCredit(
    {
      keyId,
      kind: 'topup',
      amount: session.credits,
      reason: `Stripe Checkout, package ${session.package}`,
      idempotencyKey: `stripe:${session.session_id}`,
      ref: { stripeSession: session.session_id, ...ref },
    },
    now,
  );
  yield* run(sql.setCheckoutState, { sessionId: session.session_id, state: 'credited', now });
  if (credited.applied) {
    yield* run(sql.setCharged, { sessionId: session.session_id, charged });
    const reversed = session.payment_intent ? reversedOf(yield* factsOf(session.payment_intent), charged) : undefined;
    if (reversed && reversed.refunded + reversed.disputed > 0n)
      yield* settle({ ...session, charged }, keyId, reversed, `stripe-reversal:${session.session_id}:on-credit`, now);
  }
  return credited;
}

/**
 * What a first delivery of a checkout event does to its (locked) session: credits it when it was
 * paid as recorded (currency, then amount) to a key that is not revoked; otherwise holds it for
 * review, which a later matching event, or the admin, can still resolve.
 */
function* checkout({ eventId, sessionId, amountTotal, currency, paymentIntent }: StripeEvent, now: number): Op<StripeEventOutcome> {
  // Before the session, as a reversal takes them: a reversal of the payment at once either sees the link or leaves its facts to the crediting.
  if (paymentIntent) yield* run(sql.lockPayment, { paymentIntent, now });
  const session = yield* lock(sql.checkoutById, { sessionId });
  if (!session) return 'unknown_session';
  if (paymentIntent && session.payment_intent === null) {
    yield* run(sql.setPaymentIntent, { sessionId, paymentIntent });
    session.payment_intent = paymentIntent;
  }
  if (session.state === 'credited' || session.state === 'rejected') return 'duplicate_session';
  const key = yield* get(sql.keyById, { id: session.key_id });
  const reason: ReviewReason | undefined =
    currency.toLowerCase() !== session.currency.toLowerCase()
      ? 'currency_mismatch'
      : amountTotal !== session.amount_total
        ? 'amount_mismatch'
        : key?.status === 'revoked'
          ? 'key_revoked'
          : undefined;
  if (reason) {
    const mismatch = reason !== 'key_revoked';
    const paid = { paidAmount: mismatch ? amountTotal : null, paidCurrency: mismatch ? currency.toLowerCase() : null };
    yield* run(sql.holdCheckout, { sessionId, reason, ...paid, now });
    return 'held_for_review';
  }
  const credited = yield* creditSession(session, session.key_id, { stripeEvent: eventId }, amountTotal, now);
  return credited.applied ? 'credited' : 'duplicate_session';
}

/** The admin's decision on a session in review; a key to credit must exist and not be revoked. */
function* resolveCheckout(sessionId: string, resolution: CheckoutResolution): Op<ResolveResult> {
  const now = Date.now();
  const session = yield* lock(sql.checkoutById, { sessionId });
  if (!session) return { ok: false, reason: 'not_found' };
  if (session.state !== 'review') return { ok: false, reason: 'not_in_review', session: toCheckout(session) };
  const reread = function* () {
    return toCheckout((yield* get(sql.checkoutById, { sessionId }))!);
  };
  if (resolution.action === 'reject') {
    yield* run(sql.setCheckoutState, { sessionId, state: 'rejected', now });
    return { ok: true, session: yield* reread() };
  }
  const keyId = resolution.keyId ?? session.key_id;
  const key = yield* get(sql.keyById, { id: keyId });
  if (!key || key.status === 'revoked') return { ok: false, reason: 'key_unusable', session: toCheckout(session) };
  const { entry } = yield* creditSession(session, keyId, { resolvedBy: 'admin' }, session.paid_amount ?? session.amount_total, now);
  return { ok: true, session: yield* reread(), entry };
}

function* completeCheckout(event: StripeEvent): Op<StripeEventOutcome> {
  const now = Date.now();
  if (
    (yield* run(sql.insertEvent, { eventId: event.eventId, type: event.type, sessionId: event.sessionId, outcome: 'received', now })) === 0
  )
    return 'duplicate_event';
  const outcome = yield* checkout(event, now);
  yield* run(sql.setEventOutcome, { eventId: event.eventId, outcome });
  return outcome;
}

/** What Stripe said of one payment's refunds and disputes (see `reversedOf`). */
export type PaymentFacts = {
  /** Each `charge.refunded`'s cumulative refund of the charge's amount (`of`), stated at `at` (s). */
  states: { refunded: bigint; of: bigint; at: number }[];
  /** Each refund that failed: its amount, made at `madeAt` and failed at `failedAt` (s). */
  failures: { amount: bigint; madeAt: number; failedAt: number }[];
  /** Each dispute by its latest state (a closed one is final); `kept`: closed with the funds kept. */
  disputes: { amount: bigint; kept: boolean }[];
};

/**
 * A payment's refund and dispute totals from what Stripe said of it, in whatever order it was
 * delivered, in the units of `charged`: the largest cumulative refund any event stated, each less
 * the refunds it counted that failed later (made before it was stated, failed after: a failed
 * refund's amount leaves the charge's `amount_refunded`), scaled from the charge's amount; plus
 * every dispute but those closed with the funds kept. The same facts give the same totals.
 *
 * @example reversedOf({ states: [{ refunded: 300n, of: 1000n, at: 10 }], failures: [{ amount: 300n, madeAt: 10, failedAt: 50 }], disputes: [] }, 1000n) // { refunded: 0n, disputed: 0n }
 * @example reversedOf({ states: [], failures: [], disputes: [{ amount: 400n, kept: false }, { amount: 600n, kept: true }] }, 1000n) // { refunded: 0n, disputed: 400n }
 */
export function reversedOf(facts: PaymentFacts, charged: bigint): { refunded: bigint; disputed: bigint } {
  let refunded = 0n;
  for (const state of facts.states) {
    const failed = facts.failures.filter((f) => f.madeAt <= state.at && state.at <= f.failedAt).reduce((sum, f) => sum + f.amount, 0n);
    const left = state.refunded > failed ? state.refunded - failed : 0n;
    const scaled = (left * charged) / state.of;
    if (scaled > refunded) refunded = scaled;
  }
  const disputed = facts.disputes.filter((d) => !d.kept).reduce((sum, d) => sum + d.amount, 0n);
  return { refunded, disputed };
}

function* factsOf(paymentIntent: string): Op<PaymentFacts> {
  const states = (yield* all(sql.refundStates, { paymentIntent })).map((r) => ({
    refunded: r.refunded,
    of: r.charge_amount,
    at: Number(r.stated_at),
  }));
  const failures = (yield* all(sql.failedRefunds, { paymentIntent })).map((r) => ({
    amount: r.amount,
    madeAt: Number(r.made_at),
    failedAt: Number(r.failed_at),
  }));
  const disputes = (yield* all(sql.disputes, { paymentIntent })).map((r) => ({ amount: r.amount, kept: Number(r.kept) === 1 }));
  return { states, failures, disputes };
}

/** Records the event's one fact about its payment (each refund state, failed refund and dispute state once). */
function* recordFact(event: ReversalEvent, now: number): Op<void> {
  const { paymentIntent, at } = event;
  if (event.refunded && event.refunded.of > 0n)
    yield* run(sql.insertRefundState, {
      eventId: event.eventId,
      paymentIntent,
      refunded: event.refunded.amount,
      chargeAmount: event.refunded.of,
      at,
    });
  if (event.refundFailed) yield* run(sql.insertFailedRefund, { ...event.refundFailed, paymentIntent, at });
  if (event.dispute) {
    const { id, amount, closed, kept } = event.dispute;
    yield* run(sql.adoptLegacyDispute, { paymentIntent, disputeId: id, at });
    yield* run(sql.saveDispute, { disputeId: id, paymentIntent, amount, closed: closed ? 1 : 0, kept: kept ? 1 : 0, now });
  }
}

/**
 * Restates the revenue booked for a subscription invoice (its charge `stripe:<invoice>`, at
 * `CENT` a cent of what was paid) to what its payments' refunds and disputes leave of it (each
 * payment's in the cents of its own charge, so one of an invoice paid in parts loses its part): the
 * amount and the operator's share each less their share lost, rounded down (the platform's is
 * the rest), from what was booked, so restating again changes nothing. The invoice's row is
 * locked first: a booking and a reversal of the same invoice queue there.
 */
function* restateInvoice(invoiceId: string, now: number): Op<'taken_back' | 'given_back' | 'unchanged' | 'not_booked'> {
  const invoice = (yield* get(sql.lockInvoice, { invoiceId, now }))!;
  const ref = `stripe:${invoiceId}`;
  const charge = yield* get(sql.invoiceCharge, { ref });
  if (!charge) return 'not_booked';
  const booked = invoice.booked ?? charge.amount;
  const bookedShare = invoice.booked_share ?? charge.operator_share;
  if (invoice.booked === null) yield* run(sql.setBooked, { invoiceId, booked, bookedShare });
  const charged = booked / CENT;
  let lost = 0n;
  for (const { payment_intent } of yield* all(sql.intentsOfInvoice, { invoiceId })) {
    const facts = yield* factsOf(payment_intent);
    // In cents of its own charge, not scaled to the invoice's: a payment of a part loses that part only.
    const { refunded, disputed } = reversedOf(facts, facts.states[0]?.of ?? charged);
    lost += refunded + disputed;
  }
  const amount = booked - takenShare(booked, charged, lost);
  const operatorShare = bookedShare - takenShare(bookedShare, charged, lost);
  if (amount === charge.amount && operatorShare === charge.operator_share) return 'unchanged';
  yield* run(sql.restateCharge, { ref, amount, operatorShare, platformShare: amount - operatorShare });
  return amount < charge.amount ? 'taken_back' : 'given_back';
}

/**
 * A refund or dispute of a payment, recorded with the event in one transaction, then what was
 * taken back for the payment restated from all its facts (see `reversedOf`): of the session its
 * PaymentIntent names (locked), else of the subscription invoice it paid (`event.invoice`, or
 * linked before). A session not credited keeps the totals for when it is; an invoice not booked,
 * the facts for when it is; a payment of neither, the facts for a later link.
 */
function* reverseCheckout(event: ReversalEvent): Op<ReversalOutcome> {
  const now = Date.now();
  const { paymentIntent } = event;
  yield* run(sql.lockPayment, { paymentIntent, now });
  const session = yield* lock(sql.checkoutByIntent, { paymentIntent });
  const sessionId = session?.session_id ?? null;
  if ((yield* run(sql.insertEvent, { eventId: event.eventId, type: event.type, sessionId, outcome: 'received', now })) === 0)
    return 'duplicate_event';
  yield* recordFact(event, now);
  let outcome: ReversalOutcome;
  if (session) {
    const charged = session.charged ?? session.paid_amount ?? session.amount_total;
    const next = reversedOf(yield* factsOf(paymentIntent), charged);
    if (session.state === 'credited') {
      const keyId = (yield* get(sql.creditedKey, { idempotencyKey: `stripe:${session.session_id}` }))?.key_id ?? session.key_id;
      outcome = yield* settle(session, keyId, next, `stripe-reversal:${event.eventId}`, now);
    } else {
      const kept = { takenBack: session.taken_back, shortfall: session.shortfall };
      yield* run(sql.setReversal, { sessionId: session.session_id, ...next, ...kept, now });
      outcome = 'not_credited';
    }
  } else {
    if (event.invoice) yield* run(sql.linkInvoice, { paymentIntent, invoiceId: event.invoice });
    const invoice = (yield* get(sql.invoiceOfIntent, { paymentIntent }))?.invoice_id;
    outcome = invoice ? yield* restateInvoice(invoice, now) : 'unattributed';
  }
  yield* run(sql.setEventOutcome, { eventId: event.eventId, outcome });
  return outcome;
}

function* setStatus(id: string, status: KeyStatus) {
  yield* run(sql.setStatus, { id, status, now: Date.now() });
  const row = yield* get(sql.keyById, { id });
  return row ? toKey(row) : undefined;
}

function* createToken(token: Omit<BudgetToken, 'spent' | 'revokedAt'>) {
  yield* run(sql.insertToken, {
    id: token.id,
    keyId: token.keyId,
    cap: token.cap,
    scope: json(token.scope),
    expiresAt: token.expiresAt,
    now: token.createdAt,
  });
  return toToken((yield* get(sql.tokenById, { id: token.id }))!);
}

function* revokeToken(keyId: string, id: string) {
  yield* run(sql.revokeToken, { id, keyId, now: Date.now() });
  const row = yield* get(sql.tokenById, { id });
  return row && row.key_id === keyId ? toToken(row) : undefined;
}

/** The credit store over a backend's runner. */
export function creditStore({ read, write, decide, unsynced }: Runner): CreditStore {
  return {
    createKey: (key, initial) => write(() => createKey(key, initial)),
    keyByHash: (hash) =>
      read(function* () {
        const row = yield* get(sql.keyByHash, { hash });
        return row ? { ...toKey(row), hash: row.hash } : undefined;
      }),
    key: (id) =>
      read(function* () {
        const row = yield* get(sql.keyById, { id });
        return row ? toKey(row) : undefined;
      }),
    keys: (filter = {}) =>
      read(function* () {
        const now = Date.now();
        return (yield* all(sql.allKeys, { operatorId: filter.operatorId ?? null })).map((r) => toKey(r, now));
      }),
    setStatus: (id, status) => write(() => setStatus(id, status)),
    setLowBalanceAlert: (id, amount) =>
      write(function* () {
        yield* run(sql.setLowBalanceAlert, { id, amount, now: Date.now() });
        const row = yield* get(sql.keyById, { id });
        return row ? toKey(row) : undefined;
      }),
    credit: (credit) => write(() => applyCredit(credit, Date.now())),
    move: (m) => write(() => move(m)),
    debit: (d) => unlessTaken(decide(() => debit(d))),
    refund: (debitId, reason) => write(() => refund(debitId, reason)),
    closeDebits: (debitIds) =>
      write(function* () {
        for (const debitId of debitIds) yield* run(sql.closeDebit, { debitId });
      }),
    openDebits: (before) =>
      read(function* () {
        return (yield* all(sql.openBefore, { before })).map((r) => r.debit_id);
      }),
    countRequest: (keyId, window) =>
      write(function* () {
        yield* run(sql.forgetWindows, { keyId, window });
        return (yield* get(sql.countRequest, { keyId, window }))!.count;
      }),
    history: (keyId, { limit, before }) =>
      read(function* () {
        return (yield* all(sql.page, { keyId, limit, before: before ?? null })).map(toEntry);
      }),
    request: (keyId, idempotencyKey) =>
      read(function* () {
        const row = yield* get(sql.requestByKey, { keyId, idempotencyKey });
        return row ? toRequest(row) : undefined;
      }),
    completeRequest: (keyId, idempotencyKey, response) =>
      unsynced(function* () {
        yield* run(sql.completeRequest, { keyId, idempotencyKey, response });
      }),
    createToken: (token) => write(() => createToken(token)),
    token: (id) =>
      read(function* () {
        const row = yield* get(sql.tokenById, { id });
        return row ? toToken(row) : undefined;
      }),
    tokens: (keyId) =>
      read(function* () {
        return (yield* all(sql.tokensOf, { keyId })).map(toToken);
      }),
    revokeToken: (keyId, id) => write(() => revokeToken(keyId, id)),
    linkSubject: (subject) =>
      write(function* () {
        const who = { issuer: subject.issuer, subject: subject.subject, keyId: subject.keyId };
        const earlier = yield* get(sql.linkedKey, who);
        if (earlier) return { linked: false, keyId: earlier.key_id };
        yield* run(sql.linkSubject, { ...who, now: Date.now() });
        // A twin linking the same subject at once: the primary key kept one; report whichever won.
        const won = (yield* get(sql.linkedKey, who))!.key_id;
        return { linked: won === subject.keyId, keyId: won };
      }),
    subjectKey: (issuer, subject, operatorId) =>
      read(function* () {
        return (yield* get(sql.subjectKey, { issuer, subject, operatorId: operatorId ?? '' }))?.key_id;
      }),
    subjects: (keyId) =>
      read(function* () {
        return (yield* all(sql.subjectsOf, { keyId })).map(toSubject);
      }),
    unlinkSubject: (subject) =>
      write(function* () {
        return (yield* run(sql.unlinkSubject, { issuer: subject.issuer, subject: subject.subject, keyId: subject.keyId })) > 0;
      }),
    recordCheckout: (session: Omit<CheckoutSession, 'state' | 'reviewReason' | 'paid' | 'createdAt' | 'updatedAt'>) =>
      write(function* () {
        yield* run(sql.insertCheckout, { ...session, now: Date.now() });
      }),
    completeCheckout: (event) => write(() => completeCheckout(event)),
    checkouts: (state, limit) =>
      read(function* () {
        const rows = state === 'shortfall' ? all(sql.shortfalls, { limit }) : all(sql.checkoutsIn, { state, limit });
        return (yield* rows).map(toCheckout);
      }),
    reverseCheckout: (event) => write(() => reverseCheckout(event)),
    paymentOf: (paymentIntent) =>
      read(function* (): Op<PaymentOf> {
        const session = yield* get(sql.checkoutByIntent, { paymentIntent });
        if (session) return { session: session.session_id };
        const invoice = yield* get(sql.invoiceOfIntent, { paymentIntent });
        return invoice ? { invoice: invoice.invoice_id } : undefined;
      }),
    restateInvoice: (invoiceId, paymentIntents) =>
      write(function* () {
        const now = Date.now();
        // Each payment's row first, as its reversals take it: one not linked yet either sees this link or leaves its facts to this restatement.
        for (const paymentIntent of paymentIntents) {
          yield* run(sql.lockPayment, { paymentIntent, now });
          yield* run(sql.linkInvoice, { paymentIntent, invoiceId });
        }
        return yield* restateInvoice(invoiceId, now);
      }),
    resolveCheckout: (sessionId, resolution) => write(() => resolveCheckout(sessionId, resolution)),
    ignoreEvent: ({ eventId, type }) =>
      write(function* () {
        yield* run(sql.insertEvent, { eventId, type, sessionId: null, outcome: 'ignored', now: Date.now() });
      }),
  };
}
