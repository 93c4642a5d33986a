import { Hono } from 'hono';
import { type StripeWebhookDeps, handleStripeWebhook } from '../rails/stripe/webhook.js';

/**
 * `POST /stripe/webhook`: Stripe's deliveries, verified on the raw body. Every verified event is
 * answered 2xx (Stripe would otherwise redeliver it for days); a bad signature is 400.
 *
 * @example app.route('/stripe', stripeRoutes({ stripe, webhookSecret, credits: store.credits, logger }));
 */
export function stripeRoutes(deps: StripeWebhookDeps): Hono {
  const app = new Hono();
  app.post('/webhook', async (c) =>
    c.json({ received: true, ...(await handleStripeWebhook(deps, await c.req.text(), c.req.header('stripe-signature'))) }),
  );
  return app;
}
