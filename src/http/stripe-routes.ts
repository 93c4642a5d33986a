import { Hono } from 'hono';
import type { Logger } from 'pino';
import type Stripe from 'stripe';
import { handleStripeWebhook } from '../rails/stripe/webhook.js';
import type { RevenueBook } from '../operators/revenue.js';
import type { CreditStore } from '../store/credits/credits.js';
import type { Store } from '../store/store.js';

/**
 * `POST /stripe/webhook`: Stripe's deliveries, verified on the raw body. Every verified event is
 * answered 2xx (Stripe would otherwise redeliver it for days); a bad signature is 400.
 *
 * @example app.route('/stripe', stripeRoutes({ stripe, webhookSecret, credits: store.credits, logger }));
 */
export function stripeRoutes(deps: {
  stripe: Stripe;
  webhookSecret: string;
  credits: CreditStore;
  logger: Logger;
  subscriptions?: { store: Store; book: RevenueBook };
  postpaid?: Store;
}): Hono {
  const app = new Hono();
  app.post('/webhook', async (c) =>
    c.json({ received: true, ...(await handleStripeWebhook(deps, await c.req.text(), c.req.header('stripe-signature'))) }),
  );
  return app;
}
