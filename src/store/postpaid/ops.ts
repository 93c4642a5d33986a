import { ENTITLED, usageVerdict } from '../../rails/invoice/rules.js';
import { keyRefusal } from '../../rails/credits/rules.js';
import { RequestTaken, unlessTaken } from '../credits/ops.js';
import { creditsSql, toKey } from '../credits/statements.js';
import { type Op, type Runner, all, get, lock, run } from '../engine/statement.js';
import { newId } from '../ids.js';
import { metaSql } from '../meta.js';
import type { Authorization, BillingChange, BillingEvent, BillingEventOutcome, NewAccount, PostpaidStore, Usage } from './postpaid.js';
import { STRIPE_OK_KEY, postpaidSql as sql, toAccount, toUnreported } from './statements.js';

const count = (v: bigint | number | null | undefined) => Number(v ?? 0);

function* link(account: NewAccount) {
  const now = Date.now();
  const written = yield* run(sql.insertAccount, { id: newId('pa'), ...account, now });
  // Not written: the key has an account on the server already, or another account has the subscription.
  const row =
    (yield* get(sql.accountOf, { keyId: account.keyId, serverId: account.serverId })) ??
    (yield* get(sql.accountBySubscription, { subscription: account.subscription }))!;
  return { created: written > 0, account: toAccount(row) };
}

function* authorize(usage: Usage): Op<Authorization> {
  const now = Date.now();
  // Locked: the verdict and the write cannot interleave with another call of this account, on any instance.
  const row = yield* lock(sql.accountOf, { keyId: usage.keyId, serverId: usage.serverId });
  if (!row) return { ok: false, reason: 'no_account' };
  // The key as stored now, not as a rail remembered it: one revoked or suspended on another instance bills nothing.
  const key = yield* get(creditsSql.keyById, { id: usage.keyId });
  const unusable = key ? keyRefusal(toKey(key, now), now) : 'key_revoked';
  if (unusable) return { ok: false, reason: unusable };
  const account = toAccount(row);
  const verdict = usageVerdict(account, usage.amount);
  if (!verdict.ok) return { ...verdict, account };
  const id = newId('ue');
  yield* run(sql.insertUsage, { id, accountId: account.id, tool: usage.tool, amount: usage.amount, now });
  const { unbilled } = (yield* get(sql.addUnbilled, { id: account.id, amount: usage.amount, now }))!;
  // Another request with this Idempotency-Key got in first: this entry must not be written.
  if (usage.request && (yield* run(sql.insertRequest, { keyId: usage.keyId, ...usage.request, usageId: id, now })) === 0)
    throw new RequestTaken();
  const entry = { id, accountId: account.id, tool: usage.tool, amount: usage.amount, state: 'open' as const, createdAt: now };
  return { ok: true, entry, unbilled, creditLimit: account.creditLimit };
}

function* voidUsage(id: string) {
  const entry = yield* get(sql.usageById, { id });
  if (entry?.state !== 'open') return;
  yield* lock(sql.accountById, { id: entry.account_id });
  if ((yield* run(sql.voidUsage, { id })) === 0) return;
  yield* run(sql.dropRequestOf, { id });
  yield* run(sql.takeUnbilled, { id: entry.account_id, amount: entry.amount, createdAt: entry.created_at, now: Date.now() });
}

/** Records an invoice's failure or settlement: by how much the account's unsettled invoices change (1, -1 or 0). */
function* invoiceChange(accountId: string, change: Extract<BillingChange, { invoice: string }>): Op<number> {
  const invoice = { accountId, invoice: change.invoice };
  if (change.kind === 'payment_failed') return (yield* run(sql.insertInvoice, { ...invoice, settled: 0 })) > 0 ? 1 : 0;
  if ((yield* run(sql.settleInvoice, invoice)) > 0) return -1;
  yield* run(sql.insertInvoice, { ...invoice, settled: 1 });
  return 0;
}

/**
 * What an event does to its (locked) account: a subscription event sets the status (and a new
 * period's start) unless a newer event set it already; a failed payment records its invoice unpaid
 * and makes an entitled account `past_due`; a paid (or voided) invoice settles only its own invoice,
 * frees the usage of the period it billed, and makes a `past_due` or `unpaid` account `active` again
 * once no failed invoice is left unsettled.
 */
function* applyEvent(event: BillingEvent): Op<BillingEventOutcome | undefined> {
  const now = Date.now();
  const row = yield* lock(sql.accountBySubscription, { subscription: event.subscription });
  if (!row) return undefined;
  const recorded = { eventId: event.eventId, type: event.type, sessionId: null, outcome: 'received', now };
  if ((yield* run(creditsSql.insertEvent, recorded)) === 0) return 'duplicate_event';
  const account = toAccount(row);
  const { change } = event;
  const newer = event.eventAt >= account.statusAt;
  let changed = false;
  const delta = change.kind === 'status' ? 0 : yield* invoiceChange(account.id, change);
  if (delta !== 0) {
    yield* run(sql.addUnpaid, { id: account.id, delta, now });
    changed = true;
  }
  if (change.kind === 'paid' && change.periodEnd !== undefined && change.periodEnd > account.paidThrough) {
    yield* run(sql.paidThrough, { id: account.id, paidThrough: change.periodEnd, now });
    changed = true;
  }
  const unpaid = account.unpaidInvoices + delta;
  const status =
    change.kind === 'status'
      ? newer
        ? change.status
        : undefined
      : change.kind === 'payment_failed'
        ? delta > 0 && newer && ENTITLED.has(account.status)
          ? 'past_due'
          : undefined
        : newer && unpaid === 0 && (account.status === 'past_due' || account.status === 'unpaid')
          ? 'active'
          : undefined;
  if (status !== undefined && status !== account.status) {
    yield* run(sql.setStatus, { id: account.id, status, statusAt: event.eventAt, now });
    changed = true;
  }
  if (change.kind === 'status' && change.periodStart !== undefined && change.periodStart > account.periodStart) {
    yield* run(sql.newPeriod, { id: account.id, periodStart: change.periodStart, now });
    changed = true;
  }
  const outcome = changed ? 'postpaid_updated' : 'postpaid_unchanged';
  yield* run(creditsSql.setEventOutcome, { eventId: event.eventId, outcome });
  return outcome;
}

/** The post-paid store over a backend's runner. */
export function postpaidStore({ read, write, decide }: Runner): PostpaidStore {
  return {
    link: (account) => write(() => link(account)),
    account: (keyId, serverId) =>
      read(function* () {
        const row = yield* get(sql.accountOf, { keyId, serverId });
        return row ? toAccount(row) : undefined;
      }),
    accounts: (keyId) =>
      read(function* () {
        return (yield* all(sql.accountsOf, { keyId })).map(toAccount);
      }),
    authorize: (usage) => unlessTaken(decide(() => authorize(usage))),
    hasAccounts: (serverId) =>
      read(function* () {
        return (yield* get(sql.anyAccountOn, { serverId })) !== undefined;
      }),
    close: (ids) =>
      write(function* () {
        for (const id of ids) yield* run(sql.closeUsage, { id });
      }),
    void: (id) => write(() => voidUsage(id)),
    openBefore: (before) =>
      read(function* () {
        return (yield* all(sql.openBefore, { before })).map((r) => r.id);
      }),
    unreported: (limit) =>
      read(function* () {
        return (yield* all(sql.unreported, { limit })).map(toUnreported);
      }),
    reported: (ids, now) =>
      write(function* () {
        for (const id of ids) yield* run(sql.markReported, { id, now });
        yield* run(metaSql.upsert, { key: STRIPE_OK_KEY, value: String(now), now });
      }),
    refuse: (id, error) =>
      write(function* () {
        yield* run(sql.refuse, { id, error });
      }),
    applyEvent: (event) => write(() => applyEvent(event)),
    billing: (staleBefore) =>
      read(function* () {
        const row = (yield* get(sql.billing, { staleBefore }))!;
        const ok = yield* get(metaSql.read, { key: STRIPE_OK_KEY });
        return {
          accounts: count(row.accounts),
          unreported: count(row.unreported),
          staleUnreported: count(row.stale),
          refused: count(row.refused),
          ...(row.webhook !== null ? { lastWebhookAt: count(row.webhook) } : {}),
          ...(ok ? { lastStripeOkAt: Number(ok.value) } : {}),
        };
      }),
  };
}
