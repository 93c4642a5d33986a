import Stripe from 'stripe';

/**
 * The official Stripe client. `apiUrl` points it at a Stripe-compatible server instead of
 * api.stripe.com (stripe-mock, or the tests' local one): only host, port and protocol change.
 *
 * @example const stripe = stripeClient(secrets.stripeSecretKey, config.credits.stripeApiUrl);
 */
export function stripeClient(secretKey: string, apiUrl?: string): Stripe {
  const target = apiUrl ? new URL(apiUrl) : undefined;
  return new Stripe(secretKey, {
    maxNetworkRetries: 2,
    timeout: 15_000,
    ...(target
      ? {
          host: target.hostname,
          port: Number(target.port || (target.protocol === 'https:' ? 443 : 80)),
          protocol: target.protocol.slice(0, -1) as 'http' | 'https',
        }
      : {}),
  });
}
