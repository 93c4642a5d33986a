import { Hono } from 'hono';
import { cors } from 'hono/cors';
import type { Address } from 'viem';
import type { Network } from '../chain/networks.js';
import { type Plan, isMetered, listPrice, namedTools, publicPlan } from '../pricing/plans.js';
import { atomicToUsd } from '../pricing/pricing.js';
import type { ToolsSource } from '../upstream/upstream-tools.js';

export type PaidEndpoint = {
  /** Path of the MCP endpoint on this server, e.g. `/mcp`. */
  path: string;
  plan: Plan;
  payTo: Address;
  /** Answers at once (see `toolsLookups`): one upstream never holds the document up. */
  tools: ToolsSource;
};

/** The credits rail as discovery describes it; absent when it is off. */
export type CreditsOffer = {
  topupMin: bigint;
  topupMax: bigint;
  packages: Record<string, { priceUsd: bigint; creditsUsd: bigint }>;
  stripe: boolean;
};

/**
 * `endpoints` is asked on every request: servers registered through the API come and go.
 * `facilitator`: where payments are verified and settled, a path on this server or another URL.
 */
export type DiscoveryOptions = { network: Network; endpoints: () => Promise<PaidEndpoint[]>; facilitator: string; credits?: CreditsOffer };

/** Version of the `/.well-known/mcp-payment` document; bumped on any incompatible change. */
export const DISCOVERY_VERSION = 1;

/**
 * `GET /.well-known/mcp-payment`: what each MCP endpoint here charges, how to pay, and where the
 * facilitator is. `GET /pricing`: the same prices as flat rows. Tools are the last list the
 * upstream gave, as of `toolsAsOf`; an upstream that cannot be asked for them still gets its
 * configured prices listed (and its last known tools), with `toolsError` saying why. Both answer
 * CORS for GET from any origin (no credentials), so an agent in a browser can read them.
 */
export function discoveryRoutes(options: DiscoveryOptions): Hono {
  const { network } = options;
  const app = new Hono();
  const price = (amount: bigint) => ({ amount: amount.toString(), usd: atomicToUsd(amount) });

  async function describe(origin: string, endpoint: PaidEndpoint) {
    const { tools, asOf, error: toolsError } = await endpoint.tools();
    const descriptions = new Map(tools.map((t) => [t.name, t.description]));
    const { plan } = endpoint;
    const named = new Set([...descriptions.keys(), ...namedTools(plan)]);
    return {
      url: `${origin}${endpoint.path}`,
      transport: 'streamable-http',
      rails: options.credits ? ['x402', 'credits'] : ['x402'],
      x402: {
        scheme: 'exact',
        network: network.caip2,
        networkV1: network.x402v1,
        asset: network.usdc.address,
        assetName: network.usdc.name,
        decimals: network.usdc.decimals,
        payTo: endpoint.payTo,
        facilitator: new URL(options.facilitator, origin).href,
        challenge: 'MCP tool result (x402 v2 PaymentRequired); pay in params._meta["x402/payment"]',
      },
      ...(options.credits ? { credits: creditsOf(origin, options.credits) } : {}),
      defaultPrice: price(listPrice(plan, '*')),
      ...(plan.type !== 'per_call' || isMetered(plan) ? { plan: publicPlan(plan) } : {}),
      tools: [...named].sort().map((name) => ({
        name,
        ...price(listPrice(plan, name)),
        ...(descriptions.get(name) ? { description: descriptions.get(name) } : {}),
      })),
      ...(asOf !== undefined ? { toolsAsOf: new Date(asOf).toISOString() } : {}),
      ...(toolsError ? { toolsError } : {}),
    };
  }

  function creditsOf(origin: string, credits: CreditsOffer) {
    return {
      unit: 'micro-USD (1 = one USDC atomic unit)',
      authorization: 'Authorization: Bearer tp_… (API key) or a budget token; or X-API-Key: tp_…',
      receipt: 'result._meta["turnpike/credits"] and the X-Credits-Remaining header',
      balance: `${origin}/credits/balance`,
      topup: {
        x402: { url: `${origin}/credits/topup?usd=<amount>`, min: price(credits.topupMin), max: price(credits.topupMax) },
        ...(credits.stripe
          ? {
              checkout: {
                url: `${origin}/credits/checkout`,
                packages: Object.entries(credits.packages).map(([id, p]) => ({
                  id,
                  priceUsd: atomicToUsd(p.priceUsd),
                  creditsUsd: atomicToUsd(p.creditsUsd),
                })),
              },
            }
          : {}),
      },
      budgetTokens: `${origin}/credits/tokens`,
    };
  }

  // Public, read-only documents: a browser agent on any origin may read them, and do nothing else.
  const readable = cors({ origin: '*', allowMethods: ['GET'] });
  app.use('/.well-known/mcp-payment', readable);
  app.use('/pricing', readable);

  app.get('/.well-known/mcp-payment', async (c) => {
    const origin = new URL(c.req.url).origin;
    return c.json({
      version: DISCOVERY_VERSION,
      endpoints: await Promise.all((await options.endpoints()).map((e) => describe(origin, e))),
    });
  });

  app.get('/pricing', async (c) => {
    const origin = new URL(c.req.url).origin;
    const endpoints = await Promise.all((await options.endpoints()).map((e) => describe(origin, e)));
    return c.json({
      version: DISCOVERY_VERSION,
      prices: endpoints.flatMap((e) =>
        [{ name: '*', amount: e.defaultPrice.amount, usd: e.defaultPrice.usd }, ...e.tools].map((t) => ({
          endpoint: e.url,
          tool: t.name,
          amount: t.amount,
          usd: t.usd,
          asset: e.x402.asset,
          network: e.x402.network,
          payTo: e.x402.payTo,
        })),
      ),
    });
  });
  return app;
}
