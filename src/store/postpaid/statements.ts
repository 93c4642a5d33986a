import { command, query } from '../engine/statement.js';
import type { PostpaidAccount, UnreportedUsage, UsageEntry, UsageState } from './postpaid.js';

export type AccountRow = {
  id: string;
  key_id: string;
  server_id: string;
  customer: string;
  subscription: string;
  meter: string;
  credit_limit: bigint;
  unbilled: bigint;
  period_start: bigint;
  paid_through: bigint;
  unpaid_invoices: bigint | number;
  status: string;
  status_at: bigint;
  created_at: bigint;
  updated_at: bigint;
};
export type UsageRow = {
  id: string;
  account_id: string;
  tool: string;
  amount: bigint;
  state: UsageState;
  created_at: bigint;
  reported_at: bigint | null;
  report_error: string | null;
};

export const toAccount = (r: AccountRow): PostpaidAccount => ({
  id: r.id,
  keyId: r.key_id,
  serverId: r.server_id,
  customer: r.customer,
  subscription: r.subscription,
  meter: r.meter,
  creditLimit: r.credit_limit,
  unbilled: r.unbilled,
  periodStart: Number(r.period_start),
  paidThrough: Number(r.paid_through),
  unpaidInvoices: Number(r.unpaid_invoices),
  status: r.status,
  statusAt: Number(r.status_at),
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});
export const toUsage = (r: UsageRow): UsageEntry => ({
  id: r.id,
  accountId: r.account_id,
  tool: r.tool,
  amount: r.amount,
  state: r.state,
  createdAt: Number(r.created_at),
  ...(r.reported_at !== null ? { reportedAt: Number(r.reported_at) } : {}),
  ...(r.report_error !== null ? { reportError: r.report_error } : {}),
});
export const toUnreported = (r: UsageRow & { customer: string; meter: string }): UnreportedUsage => ({
  ...toUsage(r),
  customer: r.customer,
  meter: r.meter,
});

type Id = { id: string };
type Now = { now: number };
/** A count: BIGINT from both backends (SUM of integers is numeric on PostgreSQL, read as bigint too). */
type Count = bigint | number | null;

/** The meta key holding the time (ms) of the latest call Stripe answered with success. */
export const STRIPE_OK_KEY = 'postpaid:stripe-ok';

export const postpaidSql = {
  accountById: query<Id, AccountRow>('SELECT * FROM postpaid_accounts WHERE id = @id', { lockable: true }),
  accountOf: query<{ keyId: string; serverId: string }, AccountRow>(
    'SELECT * FROM postpaid_accounts WHERE key_id = @keyId AND server_id = @serverId',
    { lockable: true },
  ),
  accountBySubscription: query<{ subscription: string }, AccountRow>('SELECT * FROM postpaid_accounts WHERE subscription = @subscription', {
    lockable: true,
  }),
  anyAccountOn: query<{ serverId: string }, { id: string }>('SELECT id FROM postpaid_accounts WHERE server_id = @serverId LIMIT 1'),
  accountsOf: query<{ keyId: string }, AccountRow>('SELECT * FROM postpaid_accounts WHERE key_id = @keyId ORDER BY created_at, id'),
  insertAccount: command<
    Id &
      Now &
      Pick<
        PostpaidAccount,
        'keyId' | 'serverId' | 'customer' | 'subscription' | 'meter' | 'creditLimit' | 'periodStart' | 'status' | 'statusAt'
      >
  >(`
    INSERT INTO postpaid_accounts (id, key_id, server_id, customer, subscription, meter, credit_limit, period_start, paid_through,
      status, status_at, created_at, updated_at)
    VALUES (@id, @keyId, @serverId, @customer, @subscription, @meter, @creditLimit, @periodStart, @periodStart, @status, @statusAt,
      @now, @now)
    ON CONFLICT DO NOTHING`),
  addUnbilled: query<Id & Now & { amount: bigint }, { unbilled: bigint }>(
    'UPDATE postpaid_accounts SET unbilled = unbilled + @amount, updated_at = @now WHERE id = @id RETURNING unbilled',
  ),
  // Only usage not yet paid counts; CASE: the one spelling of "not below zero" both backends read.
  takeUnbilled: command<Id & Now & { amount: bigint; createdAt: bigint }>(`
    UPDATE postpaid_accounts SET unbilled = CASE WHEN unbilled > @amount THEN unbilled - @amount ELSE 0 END, updated_at = @now
    WHERE id = @id AND paid_through <= @createdAt`),
  setStatus: command<Id & Now & { status: string; statusAt: number }>(
    'UPDATE postpaid_accounts SET status = @status, status_at = @statusAt, updated_at = @now WHERE id = @id',
  ),
  // A new period does not free the limit: the last period's usage is owed until its invoice is paid.
  newPeriod: command<Id & Now & { periodStart: number }>(
    'UPDATE postpaid_accounts SET period_start = @periodStart, updated_at = @now WHERE id = @id',
  ),
  // An invoice paid for the usage up to `paidThrough`: what stays owed is what was recorded since (calls made before the event arrived included).
  paidThrough: command<Id & Now & { paidThrough: number }>(`
    UPDATE postpaid_accounts SET paid_through = @paidThrough, updated_at = @now,
      unbilled = (SELECT COALESCE(SUM(amount), 0) FROM usage_entries
                  WHERE account_id = @id AND state <> 'void' AND created_at >= @paidThrough)
    WHERE id = @id AND paid_through < @paidThrough`),
  // An invoice seen first (failed or settled); one seen before keeps its row: a failure after the payment changes nothing.
  insertInvoice: command<{ accountId: string; invoice: string; settled: number }>(
    'INSERT INTO postpaid_invoices (account_id, invoice_id, settled) VALUES (@accountId, @invoice, @settled) ON CONFLICT DO NOTHING',
  ),
  settleInvoice: command<{ accountId: string; invoice: string }>(
    'UPDATE postpaid_invoices SET settled = 1 WHERE account_id = @accountId AND invoice_id = @invoice AND settled = 0',
  ),
  // Kept with the account's row (locked by the event that changes it), so the hot path reads it with the row.
  addUnpaid: command<Id & Now & { delta: number }>(
    'UPDATE postpaid_accounts SET unpaid_invoices = unpaid_invoices + @delta, updated_at = @now WHERE id = @id',
  ),

  usageById: query<Id, UsageRow>('SELECT * FROM usage_entries WHERE id = @id'),
  insertUsage: command<Id & Now & { accountId: string; tool: string; amount: bigint }>(`
    INSERT INTO usage_entries (id, account_id, tool, amount, state, created_at) VALUES (@id, @accountId, @tool, @amount, 'open', @now)`),
  insertRequest: command<Now & { keyId: string; idempotencyKey: string; bodyHash: string; usageId: string }>(`
    INSERT INTO idempotent_requests (key_id, idempotency_key, body_hash, usage_id, created_at)
    VALUES (@keyId, @idempotencyKey, @bodyHash, @usageId, @now) ON CONFLICT DO NOTHING`),
  // A voided entry's request is forgotten: a retry runs again.
  dropRequestOf: command<Id>('DELETE FROM idempotent_requests WHERE usage_id = @id'),
  closeUsage: command<Id>(`UPDATE usage_entries SET state = 'billable' WHERE id = @id AND state = 'open'`),
  voidUsage: command<Id>(`UPDATE usage_entries SET state = 'void' WHERE id = @id AND state = 'open'`),
  openBefore: query<{ before: number }, { id: string }>(
    `SELECT id FROM usage_entries WHERE state = 'open' AND created_at < @before ORDER BY created_at, id`,
  ),
  unreported: query<{ limit: number }, UsageRow & { customer: string; meter: string }>(`
    SELECT u.*, a.customer, a.meter FROM usage_entries u JOIN postpaid_accounts a ON a.id = u.account_id
    WHERE u.state = 'billable' AND u.reported_at IS NULL AND u.report_error IS NULL ORDER BY u.id LIMIT @limit`),
  markReported: command<Id & Now>('UPDATE usage_entries SET reported_at = @now WHERE id = @id AND reported_at IS NULL'),
  refuse: command<Id & { error: string }>('UPDATE usage_entries SET report_error = @error WHERE id = @id AND reported_at IS NULL'),

  billing: query<{ staleBefore: number }, { accounts: Count; unreported: Count; stale: Count; refused: Count; webhook: Count }>(`
    SELECT (SELECT COUNT(*) FROM postpaid_accounts WHERE status <> 'canceled') AS accounts,
      (SELECT COUNT(*) FROM usage_entries WHERE state = 'billable' AND reported_at IS NULL AND report_error IS NULL) AS unreported,
      (SELECT COUNT(*) FROM usage_entries
       WHERE state = 'billable' AND reported_at IS NULL AND report_error IS NULL AND created_at < @staleBefore) AS stale,
      (SELECT COUNT(*) FROM usage_entries WHERE report_error IS NOT NULL) AS refused,
      (SELECT MAX(received_at) FROM stripe_events) AS webhook`),
};
