import type Stripe from 'stripe';
import { DomainError } from '../../errors.js';
import type { RevenueBook } from '../../operators/revenue.js';
import type { Store } from '../../store/store.js';
import { openCheckoutSession } from './checkout.js';
import { CENT } from '../../pricing/pricing.js';

/**
 * Opens a Checkout Session in subscription mode for a server's `subscription` plan, for one API
 * key. The key and server (its id, and its slug for people) ride in the subscription's own
 * metadata, so every later lifecycle event says whose entitlement it changes.
 *
 * @example const { url } = await createSubscriptionCheckout({ stripe, store, publicUrl }, keyId, 'search');
 */
export async function createSubscriptionCheckout(deps: { stripe: Stripe; store: Store; publicUrl: string }, keyId: string, slug: string) {
  // Only a served server is sold: a suspended one (or its suspended operator's) would take the money and answer 404.
  const server = await deps.store.operators.servedServer(slug);
  const plan = server?.plan;
  if (!server || plan?.type !== 'subscription')
    throw new DomainError('subscription_unavailable', `server "${slug}" sells no subscription now`);
  const metadata = { key_id: keyId, server: slug, server_id: server.id };
  const session = await openCheckoutSession(deps.stripe, deps.publicUrl, {
    mode: 'subscription',
    line_items: [
      {
        quantity: 1,
        price_data: {
          currency: 'usd',
          unit_amount: Number(plan.monthlyUsd / CENT),
          recurring: { interval: 'month' },
          product_data: { name: `${server.name}: ${plan.callsPerMonth} calls a month` },
        },
      },
    ],
    client_reference_id: keyId,
    metadata,
    subscription_data: { metadata },
  });
  return { id: session.id, url: session.url, server: slug, callsPerMonth: plan.callsPerMonth, monthly: plan.monthlyUsd.toString() };
}

/**
 * Cancels a subscription at Stripe now (no further invoices); one Stripe no longer knows is
 * cancelled already. Any other failure throws a 503 that says to retry.
 *
 * @example await cancelSubscription(stripe, 'sub_1');
 */
export async function cancelSubscription(stripe: Stripe, id: string): Promise<void> {
  try {
    await stripe.subscriptions.cancel(id);
  } catch (error) {
    if ((error as { code?: string }).code === 'resource_missing') return;
    const why = (error as Error).message;
    throw new DomainError('stripe_unavailable', `Stripe did not cancel subscription ${id}: ${why}; retry the deletion`);
  }
}

/** What a subscription event did. */
export type SubscriptionOutcome = 'subscription_saved' | 'subscription_payment_failed' | 'subscription_paid' | 'subscription_unknown';

const periodEnd = (sub: Stripe.Subscription) =>
  (sub as unknown as { current_period_end?: number }).current_period_end ?? Math.max(0, ...sub.items.data.map((i) => i.current_period_end));

/** When a subscription's current period began (s): on its items in current API versions, on the subscription in older ones. */
export const periodStart = (sub: Stripe.Subscription) =>
  (sub as unknown as { current_period_start?: number }).current_period_start ??
  Math.max(0, ...(sub.items?.data ?? []).map((i) => i.current_period_start));

/** The subscription an invoice bills, if any. */
export const subscriptionOf = (invoice: Stripe.Invoice) => {
  const id =
    invoice.parent?.subscription_details?.subscription ?? (invoice as unknown as { subscription?: string | { id: string } }).subscription;
  return typeof id === 'string' ? id : id?.id;
};

/**
 * The PaymentIntents that paid an invoice, as far as the event says: its `payments` (when
 * included) or, on older API versions, its `payment_intent`.
 *
 * @example paymentIntentsOf(invoice) // ['pi_1']
 */
export const paymentIntentsOf = (invoice: Stripe.Invoice): string[] => {
  const legacy = (invoice as unknown as { payment_intent?: string | { id: string } | null }).payment_intent;
  const intents = [legacy, ...(invoice.payments?.data ?? []).map((p) => (p.status === 'paid' ? p.payment.payment_intent : undefined))];
  return intents.flatMap((i) => (typeof i === 'string' ? [i] : i ? [i.id] : []));
};

/**
 * Keeps entitlements in step with Stripe: `customer.subscription.created|updated|deleted` set a
 * subscription's status and period (an older event never overwrites a newer one),
 * `invoice.payment_failed` ends the entitlement until a payment succeeds, and `invoice.paid`
 * books the month's fee as the operator's fiat revenue (once per invoice), less the share of it
 * that refunds and disputes of its payment recorded before took back (see
 * `CreditStore.restateInvoice`). Other events: undefined.
 */
export async function handleSubscriptionEvent(
  deps: { store: Store; book: RevenueBook },
  event: Stripe.Event,
): Promise<SubscriptionOutcome | undefined> {
  const { operators } = deps.store;
  const eventAt = event.created * 1000;
  switch (event.type) {
    case 'customer.subscription.created':
    case 'customer.subscription.updated':
    case 'customer.subscription.deleted': {
      const sub = event.data.object;
      const { key_id: keyId, server, server_id: id } = sub.metadata;
      // Metadata from before server ids were recorded names a slug: the server holding it now.
      const serverId = id ?? (server ? (await operators.server(server))?.id : undefined);
      if (!keyId || !serverId || !(await deps.store.credits.key(keyId))) return 'subscription_unknown';
      const status = event.type === 'customer.subscription.deleted' ? 'canceled' : sub.status;
      await operators.saveSubscription({ id: sub.id, keyId, serverId, status, currentPeriodEnd: periodEnd(sub) * 1000, eventAt });
      return 'subscription_saved';
    }
    case 'invoice.payment_failed': {
      const id = subscriptionOf(event.data.object);
      const sub = id ? await operators.subscriptionStatus(id, 'past_due', eventAt) : undefined;
      return sub ? 'subscription_payment_failed' : 'subscription_unknown';
    }
    case 'invoice.paid': {
      const invoice = event.data.object;
      const id = subscriptionOf(invoice);
      const sub = id ? await operators.subscription(id) : undefined;
      // By id, deleted or not: the invoice is the revenue of the server subscribed to, whoever holds its slug now.
      const server = sub ? await operators.serverById(sub.serverId) : undefined;
      if (!sub || !server || !invoice.id) return 'subscription_unknown';
      await deps.book.record(
        {
          serverId: server.id,
          operatorId: server.operatorId,
          rail: 'subscription',
          caller: `key:${sub.keyId}`,
          tool: '(subscription)',
          amount: BigInt(invoice.amount_paid) * CENT,
          ref: `stripe:${invoice.id}`,
          custody: 'platform',
        },
        'earned',
      );
      await deps.store.credits.restateInvoice(invoice.id, paymentIntentsOf(invoice));
      return 'subscription_paid';
    }
    default:
      return undefined;
  }
}
