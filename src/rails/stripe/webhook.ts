import type { Logger } from 'pino';
import Stripe from 'stripe';
import type { CreditStore, StripeEventOutcome } from '../../store/credits.js';
import { ApiError } from '../../http/api-error.js';
import type { RevenueBook } from '../../operators/revenue.js';
import type { Store } from '../../store/store.js';
import { type SubscriptionOutcome, handleSubscriptionEvent } from './subscriptions.js';

/** How old a signed delivery may be: Stripe's own default, against replays of captured events. */
export const WEBHOOK_TOLERANCE_SECONDS = 300;

/**
 * Handles one Stripe webhook delivery: the signature is checked on the raw body first (a bad or
 * stale one is a 400 and changes nothing); a paid `checkout.session.completed` or
 * `checkout.session.async_payment_succeeded` credits its session's key once, whatever the order
 * or number of deliveries; subscription lifecycle and invoice events keep entitlements and
 * subscription revenue in step (see `handleSubscriptionEvent`); every other event is
 * acknowledged and recorded.
 *
 * @example const outcome = await handleStripeWebhook(deps, await c.req.text(), c.req.header('stripe-signature'));
 */
export async function handleStripeWebhook(
  deps: { stripe: Stripe; webhookSecret: string; credits: CreditStore; logger: Logger; subscriptions?: { store: Store; book: RevenueBook } },
  rawBody: string,
  signature: string | undefined,
): Promise<{ event: string; type: string; outcome: StripeEventOutcome | SubscriptionOutcome }> {
  if (!signature) throw new ApiError(400, 'signature_missing', 'a Stripe webhook needs its Stripe-Signature header');
  let event: Stripe.Event;
  try {
    event = await deps.stripe.webhooks.constructEventAsync(rawBody, signature, deps.webhookSecret, WEBHOOK_TOLERANCE_SECONDS);
  } catch (error) {
    if (error instanceof Stripe.errors.StripeSignatureVerificationError) {
      throw new ApiError(400, 'signature_invalid', `the Stripe signature does not verify: ${error.message.split('\n')[0]}`);
    }
    throw new ApiError(400, 'event_malformed', 'the body is not a Stripe event');
  }
  const session =
    (event.type === 'checkout.session.completed' && event.data.object.payment_status === 'paid') ||
    event.type === 'checkout.session.async_payment_succeeded'
      ? event.data.object
      : undefined;
  if (!session || session.mode !== 'payment') {
    const handled = deps.subscriptions && (await handleSubscriptionEvent(deps.subscriptions, event));
    if (handled) {
      deps.logger.info({ event: event.id, type: event.type, outcome: handled }, 'Stripe event');
      return { event: event.id, type: event.type, outcome: handled };
    }
    await deps.credits.ignoreEvent({ eventId: event.id, type: event.type });
    return { event: event.id, type: event.type, outcome: 'ignored' };
  }
  const outcome = await deps.credits.completeCheckout({ eventId: event.id, type: event.type, sessionId: session.id, amountTotal: BigInt(session.amount_total ?? -1) });
  const log = { event: event.id, type: event.type, session: session.id, outcome };
  if (outcome === 'unknown_session' || outcome === 'amount_mismatch') deps.logger.error(log, 'Stripe event not credited');
  else deps.logger.info(log, 'Stripe event');
  return { event: event.id, type: event.type, outcome };
}
