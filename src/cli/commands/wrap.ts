import { settlementModes } from '../../facilitator/port.js';
import { flatPlan } from '../../pricing/plans.js';
import { getAddress, isAddress } from 'viem';
import { z } from 'zod';
import { connectConfiguredChain } from '../../app/chain.js';
import { loadConfig } from '../../config/load.js';
import { loadSecrets } from '../../config/secrets.js';
import { challengeBindings } from '../../gateway/payment-required.js';
import { atomicToUsd, usdPrice } from '../../pricing/pricing.js';
import { type EndpointOptions, serveGateway } from '../../app/gateway-server.js';
import { createLogger } from '../../log/logger.js';
import { UsageError, defineCommand } from '../command.js';
import { checkPort, configOverrides, serverFlags, serverFlagsSchema, stdioLimits } from '../server-flags.js';
import { listenForSignals } from '../signals.js';
import { shownCommand } from '../../upstream/stdio-command.js';
import { shownUrl } from '../../log/shown-url.js';

const toolPrice = z
  .string()
  .regex(/^[^=]+=.+$/, 'expected NAME=USD, e.g. search=0.05')
  .transform((entry, ctx) => {
    const [name, usd] = entry.split('=', 2) as [string, string];
    const price = usdPrice.safeParse(usd);
    if (price.success) return [name, price.data] as const;
    ctx.addIssue({ code: 'custom', message: `${name}: ${price.error.issues[0]!.message}` });
    return z.NEVER;
  });
const header = z
  .string()
  .regex(/^[A-Za-z0-9-]+:\s*.+$/, 'expected "Name: value"')
  .transform((h) => {
    const i = h.indexOf(':');
    return [h.slice(0, i).trim(), h.slice(i + 1).trim()] as const;
  });

export const wrapCommand = defineCommand({
  name: 'wrap',
  summary: 'put an MCP server behind per-tool x402 prices: a paying Streamable HTTP proxy in front of it',
  details:
    'Example: turnpike wrap --upstream http://127.0.0.1:4000/mcp --pay-to 0xPAYEE --price 0.01 --tool-price search=0.05\n' +
    'Prices are USD with at most 6 decimals, charged in USDC. With --network local (the default) the sandbox starts\n' +
    'in-process and --pay-to defaults to its first payee. The facilitator API is served too, under /facilitator,\n' +
    'unless facilitator.mode names another facilitator (remote, cdp).',
  flags: {
    upstream: { type: 'string', value: 'URL', description: 'the MCP server’s Streamable HTTP endpoint' },
    stdio: { type: 'string', value: '"COMMAND"', description: 'or: a stdio MCP server to run, one process per MCP session' },
    'pay-to': { type: 'string', value: 'ADDRESS', description: 'who gets paid (required outside --network local)' },
    price: { type: 'string', value: 'USD', description: 'price of every tool not named otherwise (default 0.01)' },
    'tool-price': { type: 'string', multiple: true, value: 'NAME=USD', description: 'price of one tool' },
    'free-tool': { type: 'string', multiple: true, value: 'NAME', description: 'a tool that costs nothing' },
    challenge: { type: 'string', value: 'MODE', description: 'tool-result (MCP binding, default), http-402 or jsonrpc-error (error 402)' },
    settlement: {
      type: 'string',
      value: 'MODE',
      description: 'strict (result after the settlement is mined, default) or deferred (once it is signed and journalled)',
    },
    'x402-version': { type: 'string', value: '1|2', description: 'x402 version of MCP challenges (default 2; 1 for v1-only clients)' },
    'upstream-header': { type: 'string', multiple: true, value: '"Name: value"', description: 'sent to the upstream on every request' },
    'upstream-timeout': {
      type: 'string',
      value: 'SECONDS',
      description: 'give up on a paid call after this long (default 60); not charged',
    },
    ...serverFlags,
  },
  schema: serverFlagsSchema.extend({
    upstream: z.url({ protocol: /^https?$/, error: 'expected an http(s) URL' }).optional(),
    stdio: z.string().min(1).optional(),
    'pay-to': z
      .string()
      .refine((a) => isAddress(a), 'expected a 0x address')
      .optional(),
    price: usdPrice.default(10_000n),
    'tool-price': z.array(toolPrice).default([]),
    'free-tool': z.array(z.string().min(1)).default([]),
    challenge: z.enum(challengeBindings).default('tool-result'),
    settlement: z.enum(settlementModes).default('strict'),
    'x402-version': z
      .enum(['1', '2'])
      .default('2')
      .transform((v) => (v === '1' ? 1 : 2)),
    'upstream-header': z.array(header).default([]),
    'upstream-timeout': z.coerce.number().positive().max(3600).default(60),
  }),
  async run(flags, io) {
    const signals = listenForSignals();
    if ((flags.upstream === undefined) === (flags.stdio === undefined)) {
      throw new UsageError('--upstream or --stdio: give exactly one (an HTTP MCP endpoint, or a command to run)');
    }
    const tools = Object.fromEntries(flags['tool-price']);
    const prices = { default: flags.price, tools, free: flags['free-tool'] };
    const config = loadConfig({ file: flags.config, overrides: configOverrides(flags) });
    await checkPort(config);
    const logger = createLogger(config.log);
    const secrets = loadSecrets();
    const chain = await connectConfiguredChain(config, secrets, { settles: config.facilitator.mode === 'self' });
    const payTo = flags['pay-to'] ? getAddress(flags['pay-to']) : chain.sandbox?.accounts.payees[0]?.address;
    if (!payTo) {
      await chain.close();
      throw new UsageError('--pay-to: required outside --network local');
    }
    // The stdio bridge (the MCP SDK's client and server) loads only for --stdio.
    const bridge = flags.stdio
      ? await (await import('../../upstream/stdio-bridge.js')).startStdioBridge(flags.stdio, stdioLimits(config), { logger })
      : undefined;
    const upstreamUrl = bridge?.mcpUrl ?? flags.upstream!;
    const upstream = {
      url: upstreamUrl,
      headers: Object.fromEntries(flags['upstream-header']),
      timeoutMs: flags['upstream-timeout'] * 1000,
      ...(bridge ? { tellCaller: true } : {}),
    };
    const endpoint: EndpointOptions = {
      slug: 'default',
      path: '/mcp',
      upstream,
      plan: flatPlan(prices),
      payTo,
      challenge: flags.challenge,
      settlement: flags.settlement,
      x402Version: flags['x402-version'],
    };
    const server = await serveGateway({ config, secrets, chain, logger, endpoints: [endpoint] }).catch(async (error) => {
      await bridge?.close();
      await chain.close();
      throw error;
    });

    const payer = chain.sandbox?.accounts.payers[0];
    io.stdout.write(
      [
        `turnpike wrap: paying MCP endpoint at ${server.url}/mcp → ${flags.stdio ? `stdio: ${shownCommand(flags.stdio)}` : shownUrl(upstreamUrl)}`,
        `  network      ${chain.network.name} (${chain.network.caip2}), USDC ${chain.network.usdc.address}`,
        ...(chain.sandbox ? [`  sandbox RPC  ${chain.shownRpcUrl}`] : []),
        `  pay to       ${payTo}`,
        `  prices       every tool ${atomicToUsd(prices.default)} USDC` +
          Object.entries(tools)
            .map(([name, amount]) => `, ${name} ${atomicToUsd(amount)}`)
            .join('') +
          (prices.free.length ? `; free: ${prices.free.join(', ')}` : ''),
        `  challenge    ${flags.challenge}, x402 v${flags['x402-version']}`,
        `  facilitator  ${server.facilitator}`,
        `  discovery    ${server.url}/.well-known/mcp-payment, ${server.url}/pricing, ${server.url}/health, ${server.url}/metrics`,
        ...(payer ? [`  demo payer   ${payer.address}  key ${payer.privateKey}  (LOCAL ONLY: a public key, sandbox USDC)`] : []),
        '',
      ].join('\n'),
    );
    await signals.wait();
    await server.close();
    await bridge?.close();
    await chain.close();
  },
});
