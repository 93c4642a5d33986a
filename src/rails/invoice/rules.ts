import type { PostpaidAccount, UsageRefusal } from '../../store/postpaid/postpaid.js';

/** The subscription statuses under which a post-paid account may run up usage. */
export const ENTITLED: ReadonlySet<string> = new Set(['active', 'trialing']);

/**
 * Whether a post-paid account may take a call costing `amount` (micro-USD): its subscription must
 * entitle calls and no invoice of it be left unpaid after a failed payment (whatever status Stripe
 * gives the subscription: that follows its latest invoice only), and its usage not yet paid with this
 * call stay within its credit limit. The store
 * applies it in the transaction that records the usage (the account's row locked), so concurrent
 * calls cannot together pass the limit.
 *
 * @example usageVerdict({ ...account, unbilled: 990_000n, creditLimit: 1_000_000n }, 20_000n) // { ok: false, reason: 'credit_limit' }
 */
export function usageVerdict(account: PostpaidAccount, amount: bigint): { ok: true } | { ok: false; reason: UsageRefusal } {
  if (!ENTITLED.has(account.status) || account.unpaidInvoices > 0) return { ok: false, reason: 'not_entitled' };
  if (account.unbilled + amount > account.creditLimit) return { ok: false, reason: 'credit_limit' };
  return { ok: true };
}
