import type Stripe from 'stripe';
import { z } from 'zod';
import { DomainError } from '../../errors.js';
import { usdPrice } from '../../pricing/pricing.js';
import { slugSchema } from '../../pricing/slug.js';
import type { BillingEventOutcome, PostpaidAccount } from '../../store/postpaid/postpaid.js';
import type { Store } from '../../store/store.js';
import { periodStart, subscriptionOf } from '../stripe/subscriptions.js';

export const linkAccountSchema = z.strictObject({
  server: slugSchema.describe('the server whose calls are billed to the account'),
  customer: z.string().regex(/^cus_\w{1,250}$/, 'expected a Stripe customer id (cus_…)'),
  subscription: z.string().regex(/^sub_\w{1,250}$/, 'expected a Stripe subscription id (sub_…)'),
  meter: z
    .string()
    .regex(/^[\w.:-]{1,100}$/, 'expected the Billing Meter’s event name (letters, digits, _ . : -)')
    .describe('the event_name of the Billing Meter the subscription’s metered price bills'),
  creditLimitUsd: usdPrice
    .refine((v) => v > 0n, 'expected an amount above zero')
    .describe('the most usage (USD) that may be unbilled at once'),
});

export const portalSchema = z.strictObject({ server: slugSchema.optional().describe('whose account, when the key has several') });

/** An account as the APIs show it: money as micro-USD strings. */
export const publicAccount = (a: PostpaidAccount) => ({
  id: a.id,
  keyId: a.keyId,
  serverId: a.serverId,
  customer: a.customer,
  subscription: a.subscription,
  meter: a.meter,
  status: a.status,
  creditLimit: a.creditLimit.toString(),
  unbilled: a.unbilled.toString(),
  periodStart: new Date(a.periodStart).toISOString(),
  paidThrough: new Date(a.paidThrough).toISOString(),
  unpaidInvoices: a.unpaidInvoices,
  createdAt: new Date(a.createdAt).toISOString(),
});

const stripeDown = (what: string, error: unknown) =>
  new DomainError('stripe_unavailable', `Stripe did not ${what}: ${(error as Error).message}; retry later`);

/**
 * Opens a key's post-paid account on a server (by id), for a Stripe subscription the operator made
 * to their metered price: Stripe is asked once, here, that the subscription exists and is the
 * customer's; its status and period start the account. A second account for the key on the
 * server, or for the subscription, is 409.
 *
 * @example await linkAccount({ stripe, store }, 'key_…', 'srv_…', { customer: 'cus_1', subscription: 'sub_1', meter: 'mcp_usage', creditLimitUsd: 50_000_000n })
 */
export async function linkAccount(
  deps: { stripe: Stripe; store: Store },
  keyId: string,
  serverId: string,
  input: Omit<z.output<typeof linkAccountSchema>, 'server'>,
): Promise<PostpaidAccount> {
  let sub: Stripe.Subscription;
  try {
    sub = await deps.stripe.subscriptions.retrieve(input.subscription);
  } catch (error) {
    if ((error as { code?: string }).code === 'resource_missing')
      throw new DomainError('subscription_invalid', `Stripe knows no subscription ${input.subscription}`, { field: 'subscription' });
    throw stripeDown('read the subscription', error);
  }
  const customer = typeof sub.customer === 'string' ? sub.customer : sub.customer.id;
  if (customer !== input.customer)
    throw new DomainError('subscription_invalid', `subscription ${sub.id} is not customer ${input.customer}'s`, { field: 'customer' });
  const { created, account } = await deps.store.postpaid.link({
    keyId,
    serverId,
    customer,
    subscription: sub.id,
    meter: input.meter,
    creditLimit: input.creditLimitUsd,
    periodStart: periodStart(sub) * 1000,
    status: sub.status,
    // Stripe dates events to the second: an event of this very second is not taken for an older one.
    statusAt: Math.floor(Date.now() / 1000) * 1000,
  });
  if (!created)
    throw new DomainError('postpaid_account_exists', `account ${account.id} already bills this key on this server, or this subscription`, {
      account: account.id,
    });
  return account;
}

/**
 * A Stripe Customer Portal session for the customer of one of the key's post-paid accounts (the
 * one on `serverId`, or the latest): where they see invoices and settle a failed payment.
 *
 * @example const { url } = await openPortal({ stripe, store, returnUrl }, 'key_…');
 */
export async function openPortal(deps: { stripe: Stripe; store: Store; returnUrl: string }, keyId: string, serverId?: string) {
  const accounts = await deps.store.postpaid.accounts(keyId);
  const account = serverId === undefined ? accounts.at(-1) : accounts.find((a) => a.serverId === serverId);
  if (!account) throw new DomainError('postpaid_account_not_found', 'this key has no post-paid account (here): nothing to bill');
  try {
    const session = await deps.stripe.billingPortal.sessions.create({ customer: account.customer, return_url: deps.returnUrl });
    return { url: session.url, customer: account.customer, account: account.id };
  } catch (error) {
    throw stripeDown('open a billing portal session', error);
  }
}

/**
 * What a Stripe event does to a post-paid account: `customer.subscription.created|updated|deleted`
 * set its status (deleted: `canceled`) and period, `invoice.payment_failed` records its invoice
 * unpaid (the account is `past_due` while one is), `invoice.paid` and `invoice.voided` settle their
 * own invoice and free the usage of the period it billed (up to its `period_end`: a subscription
 * invoice bills the period just ended). Undefined for other events, and for subscriptions no account
 * has (the subscription plans' handler's then).
 */
export async function handlePostpaidEvent(store: Store, event: Stripe.Event): Promise<BillingEventOutcome | undefined> {
  const base = { eventId: event.id, type: event.type, eventAt: event.created * 1000 };
  switch (event.type) {
    case 'customer.subscription.created':
    case 'customer.subscription.updated':
    case 'customer.subscription.deleted': {
      const sub = event.data.object;
      const status = event.type === 'customer.subscription.deleted' ? 'canceled' : sub.status;
      const start = periodStart(sub);
      const change = { kind: 'status' as const, status, ...(start > 0 ? { periodStart: start * 1000 } : {}) };
      return store.postpaid.applyEvent({ ...base, subscription: sub.id, change });
    }
    case 'invoice.payment_failed':
    case 'invoice.paid':
    case 'invoice.voided': {
      const invoice = event.data.object;
      const subscription = subscriptionOf(invoice);
      if (!subscription || !invoice.id) return undefined;
      const change =
        event.type === 'invoice.payment_failed'
          ? { kind: 'payment_failed' as const, invoice: invoice.id }
          : { kind: 'paid' as const, invoice: invoice.id, ...(invoice.period_end > 0 ? { periodEnd: invoice.period_end * 1000 } : {}) };
      return store.postpaid.applyEvent({ ...base, subscription, change });
    }
    default:
      return undefined;
  }
}
