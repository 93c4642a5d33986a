import type { Address } from 'viem';
import type { ChainConnection } from '../chain/connect.js';
import type { Config } from '../config/schema.js';
import type { Secrets } from '../config/secrets.js';
import { createCredits } from '../rails/credits/credits.js';
import { openDebits } from '../rails/credits/open-debits.js';
import { createCheckout } from '../rails/stripe/checkout.js';
import { stripeClient } from '../rails/stripe/stripe-client.js';
import { adminRoutes } from './admin-routes.js';
import { stripeRoutes } from './stripe-routes.js';
import { creditsRoutes } from './credits-routes.js';
import { openFacilitator } from '../facilitator/open.js';
import { createGateway } from '../gateway/gateway.js';
import type { PriceTable } from '../gateway/pricing.js';
import type { Upstream } from '../gateway/upstream.js';
import { upstreamTools } from '../gateway/upstream-tools.js';
import type { Logger } from 'pino';
import { createApp } from './app.js';
import { discoveryRoutes } from './discovery.js';
import { facilitatorRoutes } from './facilitator-routes.js';
import { healthRoutes } from './health.js';
import { listen } from './listen.js';
import { createMetrics, metricsRoutes } from './metrics.js';

/** One paying MCP endpoint: its path on this server, its upstream, prices and payee. */
export type EndpointOptions = {
  /** Names the server in key and token scopes. */
  slug: string;
  path: string;
  upstream: Upstream;
  prices: PriceTable;
  payTo: Address;
  challenge: 'tool-result' | 'http-402';
};

export type GatewayServerOptions = {
  config: Config;
  secrets: Secrets;
  chain: ChainConnection;
  logger: Logger;
  endpoints: EndpointOptions[];
};

/**
 * Everything a paying gateway serves, on one port: each MCP endpoint at its path, the facilitator
 * API at `/facilitator`, discovery (`/.well-known/mcp-payment`, `/pricing`), `/health` and
 * `/metrics`. The journal is reconciled before the first request is accepted.
 *
 * @example const server = await serveGateway({ config, chain, logger, endpoints: [{ path: '/mcp', upstream, prices, payTo, challenge: 'tool-result' }] });
 */
export async function serveGateway(options: GatewayServerOptions) {
  const { config, chain, logger, secrets } = options;
  const { store, facilitator } = await openFacilitator({ config, chain, logger });
  const credits = config.credits.enabled
    ? createCredits({ store, tokenSecret: secrets.tokenSecret ?? (await store.instanceSecret('budget-tokens')) })
    : undefined;
  // A call can run no longer than its upstream's timeout; a debit open much longer was cut off.
  const maxCallMs = Math.max(...options.endpoints.map((e) => e.upstream.timeoutMs)) + 2_000;
  const debits = credits ? openDebits(store.credits, { maxCallMs, logger }) : undefined;
  await debits?.start();

  let hosts: string[] = [];
  let url = '';
  const metrics = createMetrics();
  const app = createApp(logger);
  for (const endpoint of options.endpoints) {
    app.route(
      endpoint.path,
      createGateway({
        upstream: endpoint.upstream,
        prices: endpoint.prices,
        payTo: endpoint.payTo,
        network: chain.network,
        facilitator,
        challenge: endpoint.challenge,
        bodyLimitBytes: config.http.bodyLimitBytes,
        allowedHosts: () => hosts,
        logger,
        metrics,
        server: endpoint.slug,
        ...(credits && debits ? { credits: { credits, store, debits } } : {}),
      }),
    );
  }
  if (credits) {
    const payTo = (config.credits.payTo as Address | undefined) ?? options.endpoints[0]!.payTo;
    const topup = { payTo, min: config.credits.topupMinUsd, max: config.credits.topupMaxUsd };
    const { stripeSecretKey, stripeWebhookSecret: webhookSecret } = secrets;
    const stripe = stripeSecretKey && webhookSecret ? stripeClient(stripeSecretKey, config.credits.stripeApiUrl) : undefined;
    if (!stripe && (stripeSecretKey || webhookSecret)) logger.warn('card top-ups are off: set both STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET');
    const checkout = stripe
      ? (keyId: string, packageId: string) =>
          createCheckout({ stripe, credits: store.credits, packages: config.credits.packages, publicUrl: config.credits.publicUrl ?? url }, keyId, packageId)
      : undefined;
    app.route('/credits', creditsRoutes({ credits, store, facilitator, network: chain.network, topup, ...(checkout ? { checkout } : {}) }));
    if (stripe) app.route('/stripe', stripeRoutes({ stripe, webhookSecret: webhookSecret!, credits: store.credits, logger }));
    app.route('/admin', adminRoutes({ credits, store, adminKey: secrets.adminKey }));
  }
  app.route('/facilitator', facilitatorRoutes(facilitator, { bodyLimitBytes: config.http.bodyLimitBytes, logger }));
  app.route(
    '/',
    discoveryRoutes({
      network: chain.network,
      endpoints: options.endpoints.map((e) => ({ path: e.path, prices: e.prices, payTo: e.payTo, tools: upstreamTools(e.upstream) })),
      facilitatorPath: '/facilitator',
      ...(credits
        ? {
            credits: {
              topupMin: config.credits.topupMinUsd,
              topupMax: config.credits.topupMaxUsd,
              packages: config.credits.packages,
              stripe: Boolean(secrets.stripeSecretKey && secrets.stripeWebhookSecret),
            },
          }
        : {}),
    }),
  );
  app.route('/', healthRoutes({ client: chain.client, store }));
  app.route('/', metricsRoutes(metrics));
  const server = await listen(app, config.http);
  url = server.url;
  const { port } = new URL(server.url);
  hosts = [new URL(server.url).host, `localhost:${port}`, `127.0.0.1:${port}`];
  return {
    url: server.url,
    async close() {
      await server.close();
      await debits?.stop();
      await store.close();
    },
  };
}
