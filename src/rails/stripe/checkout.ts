import type Stripe from 'stripe';
import { atomicToUsd } from '../../pricing/pricing.js';
import type { CreditStore } from '../../store/credits/credits.js';
import { DomainError } from '../../errors.js';

export type CreditPackage = { priceUsd: bigint; creditsUsd: bigint };

/**
 * Opens a Stripe Checkout Session (payment mode) for a credit package, bound to the key by
 * `client_reference_id` and metadata, and records what it will credit: the webhook credits from
 * this record, not from anything the event says.
 *
 * @example const { url } = await createCheckout({ stripe, store, packages, publicUrl }, keyId, '10');
 */
export async function createCheckout(
  deps: { stripe: Stripe; credits: CreditStore; packages: Record<string, CreditPackage>; publicUrl: string },
  keyId: string,
  packageId: string,
) {
  const pack = deps.packages[packageId];
  if (!pack) {
    throw new DomainError('package_unknown', `no credit package "${packageId}"`, { packages: Object.keys(deps.packages) });
  }
  const cents = pack.priceUsd / 10_000n;
  const session = await openCheckoutSession(deps.stripe, deps.publicUrl, {
    mode: 'payment',
    line_items: [
      {
        quantity: 1,
        price_data: {
          currency: 'usd',
          unit_amount: Number(cents),
          product_data: { name: `${atomicToUsd(pack.creditsUsd)} USD of API credits` },
        },
      },
    ],
    client_reference_id: keyId,
    metadata: { key_id: keyId, package: packageId, credits: pack.creditsUsd.toString() },
  });
  if (session.amount_total === null)
    throw new DomainError('stripe_unavailable', 'Stripe answered a session without an amount; retry later');
  await deps.credits.recordCheckout({
    sessionId: session.id,
    keyId,
    package: packageId,
    credits: pack.creditsUsd,
    amountTotal: BigInt(session.amount_total),
    currency: session.currency ?? 'usd',
  });
  return {
    id: session.id,
    url: session.url,
    package: packageId,
    priceUsd: atomicToUsd(pack.priceUsd),
    creditsUsd: atomicToUsd(pack.creditsUsd),
  };
}

/**
 * Opens a Checkout Session that sends the buyer back to this gateway; a Stripe failure, or an
 * answer without a URL, is a 503 that says to retry.
 */
export async function openCheckoutSession(
  stripe: Stripe,
  publicUrl: string,
  params: Omit<Stripe.Checkout.SessionCreateParams, 'success_url' | 'cancel_url'>,
): Promise<Stripe.Checkout.Session & { url: string }> {
  let session: Stripe.Checkout.Session;
  try {
    session = await stripe.checkout.sessions.create({
      ...params,
      success_url: `${publicUrl}/credits/checkout/done?session_id={CHECKOUT_SESSION_ID}`,
      cancel_url: `${publicUrl}/credits/checkout/cancelled`,
    });
  } catch (error) {
    throw new DomainError('stripe_unavailable', `Stripe did not open a Checkout Session: ${(error as Error).message}; retry later`);
  }
  if (!session.url) throw new DomainError('stripe_unavailable', 'Stripe answered a session without a URL; retry later');
  return session as Stripe.Checkout.Session & { url: string };
}
