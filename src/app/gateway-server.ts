import type { Logger } from 'pino';
import type { Address } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import type { ChainConnection } from '../chain/connect.js';
import { secretBox } from '../operators/secret-box.js';
import { type Config, trustedProxiesOf } from '../config/schema.js';
import type { Secrets } from '../config/secrets.js';
import { openPayments } from './payments.js';
import { createGateway } from '../gateway/gateway.js';
import type { SettlementMode } from '../facilitator/port.js';
import type { Plan } from '../pricing/plans.js';
import { isTurnpike } from '../gateway/own-urls.js';
import type { ChallengeBinding } from '../gateway/payment-required.js';
import { guardedAgent } from '../upstream/ssrf.js';
import type { Upstream } from '../upstream/upstream.js';
import { type ToolsSource, toolsLookups } from '../upstream/upstream-tools.js';
import { createOperators } from '../operators/operators.js';
import { revenueBook } from '../operators/revenue.js';
import { createEvents } from '../events/endpoints.js';
import { createWithdrawals } from '../operators/withdrawals.js';
import { createCredits } from '../rails/credits/credits.js';
import { creditsRail } from '../rails/credits/rail.js';
import { x402Rail } from '../rails/x402/rail.js';
import { refusalThrottle } from '../rails/x402/refusals.js';
import { shownUrl } from '../log/shown-url.js';
import { billedServers, invoiceRail, openUsage } from '../rails/invoice/rail.js';
import { linkAccount, openPortal } from '../rails/invoice/accounts.js';
import { type TrustedIssuer, trustedIssuer } from '../oauth/issuer.js';
import { type ProtectedResource, protectedResourceRoutes } from '../oauth/resource-server.js';
import type { OAuthSettings } from '../oauth/settings.js';
import { fetch as undiciFetch } from 'undici';
import { openDebits, openLedgerDebits } from '../rails/credits/open-debits.js';
import { createCheckout } from '../rails/stripe/checkout.js';
import { stripePayouts } from '../rails/stripe/payouts.js';
import { cancelSubscription, createSubscriptionCheckout } from '../rails/stripe/subscriptions.js';
import type { ServerRecord } from '../store/operators/operators.js';
import type { Lease, Store } from '../store/store.js';
import { DomainError } from '../errors.js';
import { adminAuth, adminRoutes } from '../http/admin-routes.js';
import { createApp } from '../http/app.js';
import { consoleAssets } from '../http/console-assets.js';
import { consoleSessionRoutes } from '../http/console-session.js';
import { creditsRoutes } from '../http/credits-routes.js';
import { type PaidEndpoint, discoveryRoutes } from '../http/discovery.js';
import type { RouteDoc } from '../http/documented.js';
import { facilitatorRoutes } from '../http/facilitator-routes.js';
import { billingHealth, healthRoutes } from '../http/health.js';
import { listen } from '../http/listen.js';
import { createMetrics, metricsRoutes } from '../http/metrics.js';
import { openApiRoutes } from '../http/openapi.js';
import { operatorRoutes } from '../http/operator-routes.js';

/** One paying MCP endpoint: its path on this server, its upstream, plan and payee. */
export type EndpointOptions = {
  /** Names the server in key and token scopes. */
  slug: string;
  path: string;
  upstream: Upstream;
  plan: Plan;
  payTo: Address;
  challenge: ChallengeBinding;
  /** When a paid x402 result leaves (see `settlementModes`); strict by default. */
  settlement?: SettlementMode;
  /** The x402 version of its MCP challenges (see `GatewayOptions`); 2 by default. */
  x402Version?: 1 | 2;
  /** Set for servers registered through the operator API. */
  operatorId?: string;
  /** A registered server's id: what its counts, charges, subscriptions and scopes are bound to. */
  serverId?: string;
  custody?: 'direct' | 'platform';
  /** Callers identified by OAuth access tokens of `issuer` (see `ProtectedResource`). */
  oauth?: OAuthSettings;
};

export type GatewayServerOptions = {
  config: Config;
  secrets: Secrets;
  chain: ChainConnection;
  logger: Logger;
  /** Servers from the command line or config file; operators' servers come from the store. */
  endpoints: EndpointOptions[];
};

/**
 * Everything a paying gateway serves, on one port: each configured MCP endpoint at its path,
 * every server registered through the operator API at `/mcp/<slug>`, the facilitator API at
 * `/facilitator` (when it settles itself: `facilitator.mode: self`, see `openPayments`), the
 * credits, operator and admin APIs, discovery (`/.well-known/mcp-payment`, `/pricing`),
 * `/openapi.json`, `/health`, `/metrics`, and the operator console at `/console`. The journal is
 * reconciled, crash-cut debits refunded and unfinished withdrawals resumed before the first
 * request is accepted.
 *
 * @example const server = await serveGateway({ config, secrets, chain, logger, endpoints: [{ slug: 'default', path: '/mcp', upstream, plan, payTo, challenge: 'tool-result' }] });
 */
export async function serveGateway(options: GatewayServerOptions) {
  const { config, chain, logger, secrets } = options;
  const treasuryKey = secrets.treasuryKey ?? chain.sandbox?.accounts.treasury.privateKey;
  const keyAddress = treasuryKey ? privateKeyToAccount(treasuryKey).address : undefined;
  const treasury = (config.operators.treasury as Address | undefined) ?? keyAddress;
  if (keyAddress && treasury?.toLowerCase() !== keyAddress.toLowerCase()) {
    throw new Error(
      `operators.treasury ${treasury} is not the address of TURNPIKE_TREASURY_KEY (${keyAddress}): withdrawals would be sent from money that is not there`,
    );
  }
  // The /facilitator API settles for this gateway's own payees only: nobody else's business on its gas.
  const payees = async (store: Store) => [
    ...options.endpoints.map((e) => e.payTo),
    ...(await store.operators.servers()).flatMap((s) => (s.payTo ? [s.payTo] : [])),
    ...[treasury, config.credits.payTo].filter((a) => a !== undefined),
  ];
  const { store, payments, api, url: facilitatorUrl, close: closeStore } = await openPayments({ config, secrets, chain, logger, payees });
  const withOAuth = options.endpoints.find((e) => e.oauth);
  if (withOAuth && !config.credits.enabled) {
    throw new Error(`server ${withOAuth.slug}: OAuth callers pay from credits keys, and credits are off (credits.enabled: false)`);
  }
  const credits = config.credits.enabled
    ? createCredits({ store, tokenSecret: secrets.tokenSecret ?? (await store.instanceSecret('budget-tokens')) })
    : undefined;
  const box = secrets.secretsKey ? secretBox(secrets.secretsKey) : undefined;
  const connections = config.http.upstreamConnections;
  const registeredAgent = guardedAgent({ allowPrivate: config.operators.allowPrivateUpstreams, connections });
  // The owner's own servers may be anywhere; their connections are bounded all the same.
  const configuredAgent = guardedAgent({ allowPrivate: true, connections });
  const events = createEvents({
    store,
    ...(box ? { box } : {}),
    instance: {
      webhooks: config.events.endpoints.map((e, i) => {
        const secret = process.env[e.secretFromEnv];
        if (!secret) throw new Error(`events.endpoints[${i}].secretFromEnv: set ${e.secretFromEnv} to the endpoint's signing secret`);
        return { url: e.url, secret };
      }),
      ...(config.events.otlp ? { otlp: config.events.otlp } : {}),
    },
    // An operator's endpoint is reached as their upstream is: through the SSRF guard.
    allowPrivate: config.operators.allowPrivateUpstreams,
    dispatchers: { operator: registeredAgent, instance: configuredAgent },
    retry: config.events.retry,
    logger,
  });
  await events.start();
  const { perWindow, windowSeconds } = config.events.unpaid;
  const book = revenueBook(store, {
    takeRateBps: config.operators.takeRateBps,
    logger,
    ...(treasury ? { treasury } : {}),
    events: { wanted: events.wanted, unpaid: { perWindow, windowMs: windowSeconds * 1_000 } },
  });
  await book.start();
  // A call can run no longer than its upstream's timeout; a debit open much longer was cut off.
  const configuredMs = Math.max(0, ...options.endpoints.map((e) => e.upstream.timeoutMs));
  const maxCallMs = async () => Math.max(configuredMs, ...(await store.operators.servers()).map((s) => s.timeoutMs)) + 2_000;
  const debits = credits ? openDebits(openLedgerDebits(store.credits), { maxCallMs, logger, beforeClose: () => book.flush() }) : undefined;
  await debits?.start();

  // One instance on the store sends from the treasury key; the others reserve and leave the sending to it.
  // One attempt at a time, shared: a lease is given once, so a second concurrent take would answer
  // undefined and, assigned over the first, lose the lease this instance holds.
  let treasuryLease: Promise<Lease | undefined> | undefined;
  const isSender = async () => {
    // Its lease gone with the session that held it, this instance sends nothing more (it is stopping).
    if (!store.holdsLeases()) return false;
    const taking = (treasuryLease ??= store.lease(`treasury:${treasury!.toLowerCase()}`));
    const lease = await taking.catch((error: unknown) => {
      if (treasuryLease === taking) treasuryLease = undefined;
      throw error;
    });
    if (!lease && treasuryLease === taking) treasuryLease = undefined;
    return Boolean(lease);
  };
  const withdrawals = treasuryKey
    ? createWithdrawals({
        store,
        client: chain.client,
        network: chain.network,
        treasuryKey,
        minimum: config.operators.minWithdrawalUsd,
        logger,
        isSender,
      })
    : undefined;
  withdrawals?.start();
  const ownUrl = isTurnpike(() => ({ listening: url, public: config.credits.publicUrl }));
  const { stripeSecretKey, stripeWebhookSecret: webhookSecret } = secrets;
  // The Stripe SDK (~200 modules) and the modules that call it load only on an instance that has Stripe configured.
  const stripe =
    stripeSecretKey && webhookSecret
      ? (await import('../rails/stripe/stripe-client.js')).stripeClient(stripeSecretKey, config.credits.stripeApiUrl)
      : undefined;
  if (!stripe && (stripeSecretKey || webhookSecret)) logger.warn('Stripe is off: set both STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET');
  // Post-paid accounts: keys billed through Stripe's metered billing, usage reported in the background.
  // Their charges are written before the entries they belong to close (see revenueBook).
  const usage =
    credits && stripe ? openDebits(openUsage(store.postpaid), { maxCallMs, logger, beforeClose: () => book.flush() }) : undefined;
  const billed = billedServers(store.postpaid);
  await usage?.start();
  const reportIntervalMs = config.postpaid.reportIntervalSeconds * 1000;
  const reporter =
    usage && stripe
      ? (await import('../rails/invoice/reporter.js')).usageReporter({
          stripe,
          store,
          logger,
          intervalMs: reportIntervalMs,
          batchSize: config.postpaid.reportBatchSize,
        })
      : undefined;
  reporter?.start();
  const linkPostpaid =
    usage && stripe
      ? async (keyId: string, serverId: string, input: Parameters<typeof linkAccount>[3]) => {
          const account = await linkAccount({ stripe, store }, keyId, serverId, input);
          // Bills at once here; on other instances within NO_ACCOUNTS_TTL_MS.
          billed.linked(serverId);
          return account;
        }
      : undefined;
  const operators = createOperators({
    store,
    ...(stripe ? { cancelSubscription: (id: string) => cancelSubscription(stripe, id) } : {}),
    ...(box ? { box } : {}),
    allowPrivateUpstreams: config.operators.allowPrivateUpstreams,
    oauthCallers: config.credits.enabled,
    isTurnpike: ownUrl,
    reservedSlugs: new Set(options.endpoints.map((e) => e.slug)),
    ...(treasury ? { treasury } : {}),
  });
  const endpoints = options.endpoints.map((e) => ({ ...e, upstream: { dispatcher: configuredAgent, ...e.upstream } }));

  let hosts: string[] = [];
  let url = '';
  const metrics = createMetrics();
  const catalog: RouteDoc[] = [];
  const app = createApp(logger, { trustedProxies: trustedProxiesOf(config) });
  // Console sessions before the APIs they sign in to: the cookie stands in for the key there.
  const sessionSecret = await store.instanceSecret('console-sessions');
  const sessions = {
    operators,
    adminKey: secrets.adminKey,
    secret: sessionSecret,
    revocations: store,
    publicUrl: () => config.credits.publicUrl,
    catalog,
  };
  app.route('/', consoleSessionRoutes(sessions));
  app.route('/console', consoleAssets());
  // One throttle of refused x402 payments for the instance: paid calls on every server, and top-ups.
  const refusals = refusalThrottle({ perMinute: config.facilitator.refusedPaymentsPerMinute });
  // A key with a post-paid account on the server is billed; other keys and tokens pay from credits; x402 takes every other priced call.
  const rails = [
    ...(credits && usage ? [invoiceRail({ credits, store, billed, usage, rateLimitPerMinute: config.credits.rateLimitPerMinute })] : []),
    ...(credits && debits ? [creditsRail({ credits, store, debits, rateLimitPerMinute: config.credits.rateLimitPerMinute })] : []),
    x402Rail({ facilitator: payments, refusals }),
  ];
  const publicUrl = () => config.credits.publicUrl ?? url;
  /** The server at `path` as an OAuth protected resource: its canonical URL is the public URL and its path. */
  const resourceAt = (path: string, oauth: OAuthSettings, issuer: TrustedIssuer): ProtectedResource => ({
    issuer,
    scopes: oauth.scopes,
    required: oauth.required,
    resource: () => `${publicUrl().replace(/\/$/, '')}${path}`,
  });
  // One trusted issuer (its metadata and cached keys) per identity provider the configuration names.
  const issuers = new Map<string, TrustedIssuer>();
  /** The configured servers that take OAuth tokens, by path: what their metadata documents describe. */
  const protectedResources = new Map<string, ProtectedResource>();
  for (const { path, oauth } of endpoints) {
    if (!oauth) continue;
    const issuer = issuers.get(oauth.issuer) ?? trustedIssuer(oauth.issuer);
    issuers.set(oauth.issuer, issuer);
    protectedResources.set(path, resourceAt(path, oauth, issuer));
  }
  // An operator's identity provider is fetched as their upstream is reached: through the SSRF-guarded agent.
  const guardedFetch = ((input: string, init: object) =>
    undiciFetch(input, { ...init, dispatcher: registeredAgent })) as unknown as typeof fetch;
  // Discovery's tool lists, looked up in the background: no upstream holds a discovery request up.
  // The gateway asks the same lists whether a priced tool exists before it challenges a call.
  const lookups = toolsLookups();
  const toolsOf = new WeakMap<Upstream, ToolsSource>();
  const tools = (upstream: Upstream) => toolsOf.get(upstream) ?? toolsOf.set(upstream, lookups.of(upstream)).get(upstream)!;
  const gatewayFor = (endpoint: EndpointOptions, oauth?: ProtectedResource) =>
    createGateway({
      tools: tools(endpoint.upstream),
      upstream: endpoint.upstream,
      plan: endpoint.plan,
      payTo: endpoint.payTo,
      network: chain.network,
      rails,
      challenge: endpoint.challenge,
      ...(endpoint.settlement ? { settlement: endpoint.settlement } : {}),
      x402Version: endpoint.x402Version,
      bodyLimitBytes: config.http.bodyLimitBytes,
      allowedHosts: () => hosts,
      logger,
      metrics,
      server: endpoint.slug,
      ...(endpoint.serverId ? { serverId: endpoint.serverId } : {}),
      revenue: {
        book,
        usage: store.operators,
        custody: endpoint.custody ?? 'direct',
        ...(endpoint.operatorId ? { operatorId: endpoint.operatorId } : {}),
      },
      ...(oauth ? { oauth } : {}),
    });
  for (const endpoint of endpoints) app.route(endpoint.path, gatewayFor(endpoint, protectedResources.get(endpoint.path)));

  /** A registered server as an endpoint: its upstream secret unsealed, its connections SSRF-guarded. */
  function endpointOf(server: ServerRecord, listing: Omit<PaidEndpoint, 'tools'>, secret: string | undefined): EndpointOptions {
    const upstreamUrl = new URL(server.upstreamUrl);
    if (server.auth.mode === 'query') upstreamUrl.searchParams.set(server.auth.name, secret!);
    return {
      ...listing,
      slug: server.slug,
      upstream: {
        url: upstreamUrl.toString(),
        headers: server.auth.mode === 'header' ? { authorization: `Bearer ${secret}` } : {},
        timeoutMs: server.timeoutMs,
        dispatcher: registeredAgent,
      },
      challenge: server.challenge,
      settlement: server.settlement,
      operatorId: server.operatorId,
      serverId: server.id,
      custody: server.custody,
    };
  }

  /** A registered server as discovery lists it and as its path serves it. */
  type Mounted = {
    updatedAt: number;
    serverId: string;
    listing: PaidEndpoint;
    /**
     * Answers a request to the server's path. `env` is the outer request's (its socket, for the
     * caller's address a paid result is bound to: see `clientAddress`); without it a result sent
     * without an Idempotency-Key would be bound to no one.
     *
     * @example mounted(server).fetch(c.req.raw, c.env)
     */
    fetch: (request: Request, env: unknown) => Response | Promise<Response>;
    /** Set when the server takes OAuth callers; its issuer's keys are cached for as long as this mount lives. */
    resource?: ProtectedResource;
  };
  // Built on first use and rebuilt when the server's row changes, on this instance or another.
  const registered = new Map<string, Mounted>();
  function mounted(server: ServerRecord): Mounted {
    const known = registered.get(server.slug);
    if (known?.updatedAt === server.updatedAt && known.serverId === server.id) return known;
    const entry = mount(server);
    registered.set(server.slug, entry);
    return entry;
  }
  function mount(server: ServerRecord): Mounted {
    const { updatedAt } = server;
    const payTo = server.custody === 'direct' ? server.payTo! : treasury!;
    const listing = { path: `/mcp/${server.slug}`, plan: server.plan, payTo };
    let secret: string | undefined;
    try {
      secret = operators.secretOf(server);
    } catch (err) {
      // Its upstream cannot be reached from this instance: its calls are refused and discovery says why, the others are unaffected.
      logger.error({ err, server: server.slug }, 'an upstream secret does not open: set TURNPIKE_SECRETS_KEY to the key that sealed it');
      const why = 'this instance cannot open the server’s upstream credential (TURNPIKE_SECRETS_KEY unset, or not the one that sealed it)';
      const refused = { jsonrpc: '2.0', id: null, error: { code: -32603, message: `${why}; retry later or ask its owner` } };
      const tools = Object.assign(async () => ({ tools: [], error: why }), { offers: async () => undefined, lists: () => false });
      return { updatedAt, serverId: server.id, listing: { ...listing, tools }, fetch: () => Response.json(refused, { status: 503 }) };
    }
    const endpoint = endpointOf(server, listing, secret);
    const resource = server.oauth ? resourceAt(endpoint.path, server.oauth, trustedIssuer(server.oauth.issuer, guardedFetch)) : undefined;
    const gateway = createApp(logger).route(endpoint.path, gatewayFor(endpoint, resource));
    const fetch = (request: Request, env: unknown) => gateway.fetch(request, env);
    return {
      updatedAt,
      serverId: server.id,
      listing: { ...listing, tools: tools(endpoint.upstream) },
      fetch,
      ...(resource ? { resource } : {}),
    };
  }
  const activeOperators = async () => new Set((await store.operators.operators()).filter((o) => o.status === 'active').map((o) => o.id));
  app.all('/mcp/:slug', async (c) => {
    const slug = c.req.param('slug');
    const server = await store.operators.servedServer(slug);
    if (!server) {
      registered.delete(slug);
      return c.json({ jsonrpc: '2.0', id: null, error: { code: -32601, message: `no MCP server is served at /mcp/${slug}` } }, 404);
    }
    return mounted(server).fetch(c.req.raw, c.env);
  });

  if (credits) {
    const payTo = (config.credits.payTo as Address | undefined) ?? options.endpoints[0]?.payTo ?? treasury;
    if (!payTo) throw new Error('USDC top-ups need a payee: set credits.payTo');
    const topup = { payTo, min: config.credits.topupMinUsd, max: config.credits.topupMaxUsd };
    const checkout = stripe
      ? (keyId: string, packageId: string) =>
          createCheckout({ stripe, credits: store.credits, packages: config.credits.packages, publicUrl: publicUrl() }, keyId, packageId)
      : undefined;
    const subscribe = stripe
      ? (keyId: string, server: string) => createSubscriptionCheckout({ stripe, store, publicUrl: publicUrl() }, keyId, server)
      : undefined;
    const portal = stripe
      ? async (keyId: string, slug?: string) => {
          // A registered server's account is by its id, a configured server's by its slug.
          const serverId = slug === undefined ? undefined : ((await store.operators.server(slug))?.id ?? slug);
          return openPortal({ stripe, store, returnUrl: publicUrl() }, keyId, serverId);
        }
      : undefined;
    const stripeCheckout = checkout && subscribe && portal ? { checkout, subscribe, portal } : {};
    app.route(
      '/credits',
      creditsRoutes({ credits, store, facilitator: payments, network: chain.network, topup, refusals, ...stripeCheckout }),
    );
    if (stripe)
      app.route(
        '/stripe',
        (await import('../http/stripe-routes.js')).stripeRoutes({
          stripe,
          webhookSecret: webhookSecret!,
          credits: store.credits,
          logger,
          subscriptions: { store, book },
          postpaid: store,
        }),
      );
    const namedIssuers = async () => [
      ...issuers.keys(),
      ...(await store.operators.servers()).flatMap((s) => (s.oauth ? [s.oauth.issuer] : [])),
    ];
    // The admin bills on any server: a configured one by its slug, a registered one by its id.
    const configuredSlugs = new Set(options.endpoints.map((e) => e.slug));
    const adminLink = linkPostpaid
      ? async (keyId: string, { server, ...input }: Parameters<typeof linkPostpaid>[2] & { server: string }) => {
          const serverId = configuredSlugs.has(server) ? server : (await store.operators.server(server))?.id;
          if (!serverId) throw new DomainError('server_not_found', `no server ${server} here`);
          return linkPostpaid(keyId, serverId, input);
        }
      : undefined;
    app.route(
      '/admin',
      adminRoutes({
        credits,
        store,
        adminKey: secrets.adminKey,
        catalog,
        issuers: namedIssuers,
        ...(adminLink ? { linkPostpaid: adminLink } : {}),
      }),
    );
  }
  const payouts = stripe ? stripePayouts({ stripe, store, publicUrl, logger, minimum: config.operators.minPayoutUsd }) : undefined;
  void payouts?.reconcile().catch((err: unknown) => logger.error({ err }, 'cannot finish unfinished payouts'));
  app.route(
    '/',
    operatorRoutes({
      operators,
      store,
      events,
      ...(withdrawals ? { withdrawals } : {}),
      ...(payouts ? { payouts } : {}),
      ...(credits ? { credits } : {}),
      ...(linkPostpaid ? { linkPostpaid } : {}),
      adminKey: secrets.adminKey,
      registration: config.operators.registration,
      catalog,
    }),
  );
  // Served only by a gateway that settles itself: with another facilitator there are no relayers to settle with.
  if (api) {
    app.route(
      '/facilitator',
      facilitatorRoutes(api, {
        bodyLimitBytes: config.http.bodyLimitBytes,
        logger,
        failuresPerMinute: config.facilitator.failuresPerMinute,
        ...(secrets.facilitatorKeys ? { apiKeys: secrets.facilitatorKeys } : {}),
      }),
    );
  }
  const configured = endpoints.map((e) => ({ slug: e.slug, path: e.path, plan: e.plan, payTo: e.payTo, tools: tools(e.upstream) }));
  app.route(
    '/',
    discoveryRoutes({
      network: chain.network,
      async endpoints() {
        const active = await activeOperators();
        const listed = (await store.operators.servers({ publicOnly: true })).filter((s) => active.has(s.operatorId));
        return [...configured, ...listed.map((s) => mounted(s).listing)];
      },
      facilitator: facilitatorUrl ?? '/facilitator',
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
  app.route(
    '/',
    protectedResourceRoutes(async (path) => {
      const slug = /^\/mcp\/([^/]+)$/.exec(path)?.[1];
      const server = protectedResources.has(path) || !slug ? undefined : await store.operators.servedServer(slug);
      return protectedResources.get(path) ?? (server ? mounted(server).resource : undefined);
    }),
  );
  app.route('/', openApiRoutes(catalog, { title: 'turnpike', version: '1' }));
  const billing = reporter ? { billing: () => billingHealth(store, reportIntervalMs) } : {};
  app.route('/', healthRoutes({ client: chain.client, store, upstreams: () => configured, ...billing, events: () => events.health() }));
  // Its labels name every server, unlisted ones too, with their calls, revenue and refusals: with an
  // admin, the admin's only (Prometheus sends the key as a bearer); open only on an instance without one.
  if (secrets.adminKey) app.use('/metrics', adminAuth(secrets.adminKey));
  app.route('/', metricsRoutes(metrics));
  const server = await listen(app, config.http);
  url = server.url;
  const { port } = new URL(server.url);
  hosts = [new URL(server.url).host, `localhost:${port}`, `127.0.0.1:${port}`];
  const close = async () => {
    await server.close();
    await withdrawals?.stop();
    await debits?.stop();
    await reporter?.stop();
    await usage?.stop();
    await book.stop();
    await events.stop();
    await registeredAgent.close();
    await configuredAgent.close();
    await closeStore();
  };
  // A configured server is checked as a registered one is, once the listening address is known.
  for (const endpoint of endpoints) {
    const self = await ownUrl(new URL(endpoint.upstream.url));
    if (!self) continue;
    await close();
    const fix = 'point it at the MCP server itself';
    throw new Error(
      `server ${endpoint.slug}: its upstream ${shownUrl(endpoint.upstream.url)} is this turnpike (${self}) and would loop; ${fix}`,
    );
  }
  /** Where its x402 payments are settled: its own /facilitator, or the remote the mode names. */
  const facilitator = facilitatorUrl ?? `${server.url}/facilitator`;
  return { url: server.url, facilitator, close };
}
