import { Hono } from 'hono';
import type { Address } from 'viem';
import type { Network } from '../chain/networks.js';
import { type PriceTable, atomicToUsd, priceOf } from '../gateway/pricing.js';
import type { ToolInfo } from '../gateway/upstream-tools.js';

export type PaidEndpoint = {
  /** Path of the MCP endpoint on this server, e.g. `/mcp`. */
  path: string;
  prices: PriceTable;
  payTo: Address;
  tools: () => Promise<ToolInfo[]>;
};

export type DiscoveryOptions = { network: Network; endpoints: PaidEndpoint[]; facilitatorPath: string };

/** Version of the `/.well-known/mcp-payment` document; bumped on any incompatible change. */
export const DISCOVERY_VERSION = 1;

/**
 * `GET /.well-known/mcp-payment`: what each MCP endpoint here charges, how to pay, and where the
 * facilitator is. `GET /pricing`: the same prices as flat rows. An upstream that cannot be asked
 * for its tools still gets its configured prices listed, with `toolsError` saying why.
 */
export function discoveryRoutes(options: DiscoveryOptions): Hono {
  const { network } = options;
  const app = new Hono();
  const price = (amount: bigint) => ({ amount: amount.toString(), usd: atomicToUsd(amount) });

  async function describe(origin: string, endpoint: PaidEndpoint) {
    let tools: ToolInfo[] = [];
    let toolsError: string | undefined;
    try {
      tools = await endpoint.tools();
    } catch (error) {
      toolsError = `the MCP server could not be asked for its tools: ${(error as Error).message}`;
    }
    const descriptions = new Map(tools.map((t) => [t.name, t.description]));
    const named = new Set([...descriptions.keys(), ...Object.keys(endpoint.prices.tools), ...endpoint.prices.free]);
    return {
      url: `${origin}${endpoint.path}`,
      transport: 'streamable-http',
      rails: ['x402'],
      x402: {
        scheme: 'exact',
        network: network.caip2,
        networkV1: network.x402v1,
        asset: network.usdc.address,
        assetName: network.usdc.name,
        decimals: network.usdc.decimals,
        payTo: endpoint.payTo,
        facilitator: `${origin}${options.facilitatorPath}`,
        challenge: 'MCP tool result (x402 v2 PaymentRequired); pay in params._meta["x402/payment"]',
      },
      defaultPrice: price(endpoint.prices.default),
      tools: [...named].sort().map((name) => ({
        name,
        ...price(priceOf(endpoint.prices, name)),
        ...(descriptions.get(name) ? { description: descriptions.get(name) } : {}),
      })),
      ...(toolsError ? { toolsError } : {}),
    };
  }

  app.get('/.well-known/mcp-payment', async (c) => {
    const origin = new URL(c.req.url).origin;
    return c.json({ version: DISCOVERY_VERSION, endpoints: await Promise.all(options.endpoints.map((e) => describe(origin, e))) });
  });

  app.get('/pricing', async (c) => {
    const origin = new URL(c.req.url).origin;
    const endpoints = await Promise.all(options.endpoints.map((e) => describe(origin, e)));
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
