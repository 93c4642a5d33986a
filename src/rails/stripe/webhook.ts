import type { Logger } from 'pino';
import Stripe from 'stripe';
import type { CreditStore, ReversalEvent, ReversalOutcome, StripeEventOutcome } from '../../store/credits/credits.js';
import { DomainError } from '../../errors.js';
import type { RevenueBook } from '../../operators/revenue.js';
import type { Store } from '../../store/store.js';
import { type SubscriptionOutcome, handleSubscriptionEvent } from './subscriptions.js';
import { handlePostpaidEvent } from '../invoice/accounts.js';
import type { BillingEventOutcome } from '../../store/postpaid/postpaid.js';

/** How far from now a signed delivery's time may be: Stripe's own default, against replays of captured events. */
export const WEBHOOK_TOLERANCE_SECONDS = 300;

/**
 * The SDK refuses signatures older than the tolerance but not ones dated ahead of now: a delivery
 * signed for a future time would stay replayable until then. Every `t=` is judged (the SDK takes
 * the last one). Undefined when `t=` is absent (the SDK refuses that header itself).
 *
 * @example
 * futureSignature('t=1700003600,v1=…', 1_700_000_000) // 'the signature is dated 3600 s ahead of this server’s clock (at most 300 s)'
 */
export function futureSignature(header: string, nowSeconds: number): string | undefined {
  // Every `t=` the header has, read as the SDK reads them (it verifies the last): a present one in front hides nothing.
  const times = header.split(',').flatMap((item) => {
    const [name, value] = item.split('=');
    return name === 't' ? [Number.parseInt(value ?? '', 10)] : [];
  });
  const ahead = Math.max(0, ...times.filter(Number.isFinite)) - nowSeconds;
  if (ahead <= WEBHOOK_TOLERANCE_SECONDS) return undefined;
  return `the signature is dated ${ahead} s ahead of this server’s clock (at most ${WEBHOOK_TOLERANCE_SECONDS} s)`;
}

/** Dispute statuses of a closed dispute: final, whatever event states an earlier one later. */
const CLOSED = new Set(['won', 'lost', 'warning_closed', 'prevented']);
/** Dispute statuses at close that leave the merchant the funds: what the dispute took is given back. */
const FUNDS_KEPT = new Set(['won', 'warning_closed', 'prevented']);
/** Refund events: each carries the refund, of which only a failure is a fact (its amount leaves `amount_refunded`). */
const REFUND_EVENTS = new Set(['charge.refund.updated', 'refund.updated', 'refund.failed']);
/** Refund statuses that gave the buyer nothing: a failed refund, and a canceled one (its funds reversed as a failure's). */
const UNDONE = new Set(['failed', 'canceled']);

const idOf = (field: string | { id: string } | null | undefined) => (typeof field === 'string' ? field : field?.id);

/**
 * The fact about a payment's refunds or disputes an event states, by the PaymentIntent it is of:
 * a charge's cumulative refund, a refund that failed (or was canceled), or a dispute in its own state (closed or
 * not, by its status, not by the event's type); undefined for any other event, and for one of a
 * charge without a PaymentIntent (nothing of a Checkout Session or an invoice). `invoice`: the
 * invoice a charge paid, on API versions whose charge names it.
 *
 * @example reversalOf(chargeRefunded) // { eventId, type: 'charge.refunded', paymentIntent: 'pi_1', at, refunded: { amount: 500n, of: 1000n } }
 */
export function reversalOf(event: Stripe.Event): ReversalEvent | undefined {
  const base = { eventId: event.id, type: event.type, at: event.created };
  if (event.type === 'charge.refunded') {
    const charge = event.data.object;
    const paymentIntent = idOf(charge.payment_intent);
    const invoice = idOf((charge as unknown as { invoice?: string | { id: string } | null }).invoice);
    const refunded = { amount: BigInt(charge.amount_refunded), of: BigInt(charge.amount) };
    return paymentIntent ? { ...base, paymentIntent, refunded, ...(invoice ? { invoice } : {}) } : undefined;
  }
  if (REFUND_EVENTS.has(event.type)) {
    const refund = event.data.object as Stripe.Refund;
    const paymentIntent = idOf(refund.payment_intent);
    if (!paymentIntent || !UNDONE.has(refund.status ?? '')) return undefined;
    return { ...base, paymentIntent, refundFailed: { refundId: refund.id, amount: BigInt(refund.amount), madeAt: refund.created } };
  }
  if (event.type === 'charge.dispute.created' || event.type === 'charge.dispute.updated' || event.type === 'charge.dispute.closed') {
    const dispute = event.data.object;
    const paymentIntent = idOf(dispute.payment_intent);
    const closed = CLOSED.has(dispute.status);
    const state = { id: dispute.id, amount: BigInt(dispute.amount), closed, kept: closed && FUNDS_KEPT.has(dispute.status) };
    return paymentIntent ? { ...base, paymentIntent, dispute: state } : undefined;
  }
  return undefined;
}

/**
 * The subscription invoice a refunded or disputed payment paid, when subscriptions are sold and
 * neither the event nor this store says what it paid: Stripe's invoice payments of the
 * PaymentIntent (a read, so asking again is harmless). Undefined when it paid none; Stripe not
 * answering is a 503, nothing recorded, and Stripe delivers the event again.
 *
 * @example await invoiceOf(deps, reversal) // 'in_1'
 */
async function invoiceOf(deps: StripeWebhookDeps, reversal: ReversalEvent): Promise<string | undefined> {
  if (!deps.subscriptions || reversal.invoice || (await deps.credits.paymentOf(reversal.paymentIntent))) return undefined;
  try {
    const payment = { type: 'payment_intent', payment_intent: reversal.paymentIntent };
    const payments = await deps.stripe.invoicePayments.list({ payment, limit: 10 });
    return idOf(payments.data.find((p) => p.status === 'paid')?.invoice);
  } catch (error) {
    const why = (error as Error).message;
    throw new DomainError(
      'stripe_unavailable',
      `Stripe did not say what PaymentIntent ${reversal.paymentIntent} paid: ${why}; retry later`,
    );
  }
}

/** What a Stripe webhook delivery is handled with. */
export type StripeWebhookDeps = {
  stripe: Stripe;
  webhookSecret: string;
  credits: CreditStore;
  logger: Logger;
  subscriptions?: { store: Store; book: RevenueBook };
  /** Set when post-paid accounts are on: their subscriptions' events. */
  postpaid?: Store;
};

/**
 * Handles one Stripe webhook delivery: the signature is checked on the raw body first (a bad or
 * stale or future-dated one is a 400 and changes nothing); a paid `checkout.session.completed`
 * or `checkout.session.async_payment_succeeded` credits its session's key once, whatever the
 * order or number of deliveries, when it was paid as recorded (else it is held for review), and
 * remembers its PaymentIntent; a `charge.refunded`, a failed or canceled refund (`charge.refund.updated`,
 * `refund.updated`, `refund.failed`) or a `charge.dispute.created|updated|closed` of that
 * PaymentIntent, or of a subscription invoice's (by the charge's `invoice`, or Stripe's invoice
 * payments), takes back (or gives back) the credits' or the invoice revenue's share, once and
 * whatever the order (see `CreditStore.reverseCheckout`; one of any other payment is recorded as
 * unattributed);
 * subscription lifecycle and invoice events of a post-paid account set what it may run up, once
 * per event (see `handlePostpaidEvent`), and otherwise keep entitlements and subscription revenue
 * in step (see `handleSubscriptionEvent`); every other event is acknowledged and recorded.
 *
 * @example const outcome = await handleStripeWebhook(deps, await c.req.text(), c.req.header('stripe-signature'));
 */
export async function handleStripeWebhook(
  deps: StripeWebhookDeps,
  rawBody: string,
  signature: string | undefined,
): Promise<{ event: string; type: string; outcome: StripeEventOutcome | ReversalOutcome | SubscriptionOutcome | BillingEventOutcome }> {
  if (!signature) throw new DomainError('signature_missing', 'a Stripe webhook needs its Stripe-Signature header');
  const ahead = futureSignature(signature, Math.floor(Date.now() / 1000));
  if (ahead) throw new DomainError('signature_invalid', `${ahead}; check the clocks of this server and of the sender`);
  let event: Stripe.Event;
  try {
    event = await deps.stripe.webhooks.constructEventAsync(rawBody, signature, deps.webhookSecret, WEBHOOK_TOLERANCE_SECONDS);
  } catch (error) {
    if (error instanceof Stripe.errors.StripeSignatureVerificationError) {
      throw new DomainError('signature_invalid', `the Stripe signature does not verify: ${error.message.split('\n')[0]}`);
    }
    throw new DomainError('event_malformed', 'the body is not a Stripe event');
  }
  const reversal = reversalOf(event);
  if (reversal) {
    const invoice = await invoiceOf(deps, reversal);
    const outcome = await deps.credits.reverseCheckout(invoice ? { ...reversal, invoice } : reversal);
    const log = { event: event.id, type: event.type, paymentIntent: reversal.paymentIntent, outcome };
    if (outcome === 'shortfall')
      deps.logger.warn(log, 'Stripe refund or dispute: the key had spent the credits; suspended, see GET /admin/checkouts?state=shortfall');
    else if (outcome === 'unattributed')
      deps.logger.warn(
        log,
        'Stripe refund or dispute of a payment of no Checkout Session or subscription invoice known here: recorded, nothing taken back',
      );
    else deps.logger.info(log, 'Stripe event');
    return { event: event.id, type: event.type, outcome };
  }
  const session =
    (event.type === 'checkout.session.completed' && event.data.object.payment_status === 'paid') ||
    event.type === 'checkout.session.async_payment_succeeded'
      ? event.data.object
      : undefined;
  if (session?.mode !== 'payment') {
    const handled =
      (deps.postpaid && (await handlePostpaidEvent(deps.postpaid, event))) ||
      (deps.subscriptions && (await handleSubscriptionEvent(deps.subscriptions, event)));
    if (handled) {
      deps.logger.info({ event: event.id, type: event.type, outcome: handled }, 'Stripe event');
      return { event: event.id, type: event.type, outcome: handled };
    }
    await deps.credits.ignoreEvent({ eventId: event.id, type: event.type });
    return { event: event.id, type: event.type, outcome: 'ignored' };
  }
  const paid = { amountTotal: BigInt(session.amount_total ?? -1), currency: session.currency ?? '' };
  const intent = typeof session.payment_intent === 'string' ? session.payment_intent : session.payment_intent?.id;
  const paymentIntent = intent ? { paymentIntent: intent } : {};
  const outcome = await deps.credits.completeCheckout({
    eventId: event.id,
    type: event.type,
    sessionId: session.id,
    ...paid,
    ...paymentIntent,
  });
  const log = { event: event.id, type: event.type, session: session.id, outcome };
  if (outcome === 'unknown_session') deps.logger.error(log, 'Stripe event not credited: no such Checkout Session was opened here');
  else if (outcome === 'held_for_review') {
    const held = { ...log, paid: `${paid.amountTotal} ${paid.currency}` };
    deps.logger.warn(held, 'Stripe payment held for review: see GET /admin/checkouts?state=review');
  } else deps.logger.info(log, 'Stripe event');
  return { event: event.id, type: event.type, outcome };
}
