import type { KeyRefusal } from '../../rails/credits/rules.js';
/**
 * Post-paid accounts: an API key's account on one server, billed by Stripe at the end of each
 * period through a metered price, and one usage entry per priced call it made. Amounts are
 * integer micro-USD (1 = one USDC atomic unit), which is also the unit of the meter's quantity.
 */

/** A key's post-paid account on a server: a Stripe customer's subscription, and what it may run up. */
export type PostpaidAccount = {
  id: string;
  keyId: string;
  /** A registered server's id, or a configured server's slug. */
  serverId: string;
  /** Stripe's customer id (`cus_…`). */
  customer: string;
  /** Stripe's subscription id (`sub_…`) to the metered price. */
  subscription: string;
  /** The Billing Meter's `event_name` that usage is reported under. */
  meter: string;
  /** The most usage (micro-USD) that may be unpaid at once (`unbilled`). */
  creditLimit: bigint;
  /**
   * Usage not yet paid: recorded since `paidThrough`, delivered or still running (micro-USD). A new
   * period does not reset it: the last period's usage counts until its invoice is paid.
   */
  unbilled: bigint;
  /** Start of the subscription's current billing period (ms). */
  periodStart: number;
  /** End of the period of the latest paid (or voided) invoice (ms); at first, the period start when the account was opened. */
  paidThrough: number;
  /** Invoices whose payment failed, not yet paid or voided: while there is one, the account is past due whatever the status says. */
  unpaidInvoices: number;
  /** The subscription's status as Stripe's latest event said (`active`, `trialing`, `past_due`, `canceled`, …). */
  status: string;
  /** When the event that set `status` was created (ms): an older event never overwrites a newer one. */
  statusAt: number;
  createdAt: number;
  updatedAt: number;
};

export type NewAccount = Omit<PostpaidAccount, 'id' | 'unbilled' | 'paidThrough' | 'unpaidInvoices' | 'createdAt' | 'updatedAt'>;

/** `open`: its call is running; `billable`: its result was delivered; `void`: the call failed or was cut off (never billed). */
export type UsageState = 'open' | 'billable' | 'void';
export type UsageEntry = {
  id: string;
  accountId: string;
  tool: string;
  amount: bigint;
  state: UsageState;
  createdAt: number;
  reportedAt?: number;
  reportError?: string;
};
/** A billable entry not yet reported, with where it is reported to. */
export type UnreportedUsage = UsageEntry & { customer: string; meter: string };

export type UsageRefusal = 'no_account' | 'not_entitled' | 'credit_limit' | 'request_in_progress' | KeyRefusal;
/** A priced call to record: with its `Idempotency-Key` request, kept with the entry so a retry cannot bill again. */
export type Usage = {
  keyId: string;
  serverId: string;
  tool: string;
  amount: bigint;
  request?: { idempotencyKey: string; bodyHash: string };
};
export type Authorization =
  | { ok: true; entry: UsageEntry; unbilled: bigint; creditLimit: bigint }
  | { ok: false; reason: UsageRefusal; account?: PostpaidAccount };

/**
 * What a Stripe event says of a post-paid subscription: its status (and period), an invoice whose
 * payment failed, or an invoice settled (paid or voided: nothing more is owed for it) with the end of
 * the period whose usage it billed (ms).
 */
export type BillingChange =
  | { kind: 'status'; status: string; periodStart?: number }
  | { kind: 'payment_failed'; invoice: string }
  | { kind: 'paid'; invoice: string; periodEnd?: number };
export type BillingEvent = { eventId: string; type: string; subscription: string; eventAt: number; change: BillingChange };
export type BillingEventOutcome = 'postpaid_updated' | 'postpaid_unchanged' | 'duplicate_event';

/** What /health reports of billing. */
export type BillingState = {
  accounts: number;
  lastWebhookAt?: number;
  lastStripeOkAt?: number;
  unreported: number;
  /** Unreported entries recorded before `staleBefore`. */
  staleUnreported: number;
  /** Entries Stripe refused for good (see `refuse`). */
  refused: number;
};

export interface PostpaidStore {
  /** Opens an account; `created: false` (nothing written) when the key already has one on that server or the subscription is taken. */
  link(account: NewAccount): Promise<{ created: boolean; account: PostpaidAccount }>;
  account(keyId: string, serverId: string): Promise<PostpaidAccount | undefined>;
  accounts(keyId: string): Promise<PostpaidAccount[]>;
  /**
   * The hot path: in one transaction (the account's row locked), checks that the subscription
   * entitles calls and that `amount` keeps the unbilled usage within the credit limit, then writes
   * an `open` usage entry and adds it to the unbilled usage, and records its `Idempotency-Key`
   * request (taken by another: `request_in_progress`, nothing written). Settles once decided; `durable` before
   * anything that depends on it is answered.
   */
  authorize(usage: Usage): Promise<Authorization & { durable: Promise<void> }>;
  /** Whether any key has an account on the server (the gateway skips the per-call lookup on servers with none). */
  hasAccounts(serverId: string): Promise<boolean>;
  /** Marks entries whose results were delivered: they will be billed. */
  close(ids: string[]): Promise<void>;
  /** Voids an open entry (its call failed or was cut off), takes it off the unbilled usage and forgets its request; once. */
  void(id: string): Promise<void>;
  /** Open entries made before `before` (ms), oldest first. */
  openBefore(before: number): Promise<string[]>;
  /** Billable entries neither reported nor refused, oldest first. */
  unreported(limit: number): Promise<UnreportedUsage[]>;
  /** Records that Stripe took these entries (and, with it, a successful Stripe call at `now`). */
  reported(ids: string[], now: number): Promise<void>;
  /** Records that Stripe refused an entry for good (it is not retried; /health counts it). */
  refuse(id: string, error: string): Promise<void>;
  /**
   * Applies a Stripe event to the account of its subscription, once per event id (recorded with
   * the change, in one transaction); undefined when no account has that subscription.
   */
  applyEvent(event: BillingEvent): Promise<BillingEventOutcome | undefined>;
  billing(staleBefore: number): Promise<BillingState>;
}
