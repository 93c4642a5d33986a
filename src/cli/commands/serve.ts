import { flatPlan } from '../../pricing/plans.js';
import { getAddress } from 'viem';
import { connectConfiguredChain } from '../../app/chain.js';
import { ConfigError } from '../../config/errors.js';
import { loadConfig } from '../../config/load.js';
import { loadSecrets } from '../../config/secrets.js';
import { atomicToUsd } from '../../pricing/pricing.js';
import { type EndpointOptions, serveGateway } from '../../app/gateway-server.js';
import { createLogger } from '../../log/logger.js';
import { defineCommand } from '../command.js';
import { checkPort, configOverrides, serverFlags, serverFlagsSchema, stdioLimits } from '../server-flags.js';
import { listenForSignals } from '../signals.js';
import { shownCommand } from '../../upstream/stdio-command.js';
import { shownUrl } from '../../log/shown-url.js';

export const serveCommand = defineCommand({
  name: 'serve',
  summary: 'serve several MCP servers from a config file, each under /mcp/<slug> with its own prices and payee',
  details:
    'The config file lists `servers` (see README → Configuration). Upstream credentials are named by\n' +
    'environment variable (`headersFromEnv`), never written in the file. With operators enabled\n' +
    '(TURNPIKE_ADMIN_KEY set, or operators.registration: open) the list may be empty: a platform\n' +
    'instance whose servers are all registered through the operator API.',
  flags: serverFlags,
  schema: serverFlagsSchema,
  async run(flags, io) {
    const signals = listenForSignals();
    const config = loadConfig({ file: flags.config, overrides: configOverrides(flags) });
    // A platform instance (operators register their servers through the API) may list none of its own.
    const secrets = loadSecrets();
    const operatorsEnabled = Boolean(secrets.adminKey) || config.operators.registration === 'open';
    if (config.servers.length === 0 && !operatorsEnabled) {
      const enable = 'enable operators (TURNPIKE_ADMIN_KEY, or operators.registration: open)';
      const message = `no MCP servers to serve; list them under \`servers\`, or ${enable}`;
      throw new ConfigError([{ path: 'servers', source: flags.config ? `file ${flags.config}` : 'default', message }]);
    }
    const missing = config.servers.flatMap((s) =>
      Object.values(s.headersFromEnv)
        .filter((name) => !process.env[name])
        .map((name) => ({ path: `servers.${s.slug}.headersFromEnv`, source: 'environment', message: `set ${name}` })),
    );
    if (missing.length > 0) throw new ConfigError(missing);

    await checkPort(config);
    const logger = createLogger(config.log);
    const chain = await connectConfiguredChain(config, secrets, { settles: config.facilitator.mode === 'self' });
    // The stdio bridge (the MCP SDK's client and server) loads only when a server is a stdio command.
    const bridge = async (command: string) =>
      (await import('../../upstream/stdio-bridge.js')).startStdioBridge(command, stdioLimits(config), { logger });
    const bridges = await Promise.all(config.servers.map((s) => (s.stdio ? bridge(s.stdio) : undefined)));
    const endpoints: EndpointOptions[] = config.servers.map((s, i) => ({
      slug: s.slug,
      path: `/mcp/${s.slug}`,
      upstream: {
        url: bridges[i]?.mcpUrl ?? s.upstream!,
        headers: Object.fromEntries(Object.entries(s.headersFromEnv).map(([header, name]) => [header, process.env[name]!])),
        timeoutMs: s.timeoutSeconds * 1000,
        ...(bridges[i] ? { tellCaller: true } : {}),
      },
      plan: s.plan ?? flatPlan({ default: s.price, tools: s.tools, free: s.free }),
      payTo: getAddress(s.payTo),
      challenge: s.challenge,
      settlement: s.settlement,
      x402Version: s.x402Version,
      ...(s.oauth ? { oauth: s.oauth } : {}),
    }));
    const closeAll = async () => {
      await Promise.all(bridges.map((b) => b?.close()));
      await chain.close();
    };
    const server = await serveGateway({ config, secrets, chain, logger, endpoints }).catch(async (error) => {
      await closeAll();
      throw error;
    });
    io.stdout.write(
      [
        `turnpike serve: listening on ${server.url} (${chain.network.name}, ${chain.network.caip2})`,
        ...config.servers.map(
          (s) =>
            `  ${server.url}/mcp/${s.slug}  → ${s.upstream ? shownUrl(s.upstream) : `stdio: ${shownCommand(s.stdio!)}`}  (${atomicToUsd(s.price)} USDC a call, pays ${s.payTo})`,
        ),
        ...(config.servers.length === 0 ? [`  a platform instance: operators register servers at ${server.url}/operator/servers`] : []),
        `  discovery ${server.url}/.well-known/mcp-payment   facilitator ${server.facilitator}`,
        `  console ${server.url}/console (sign in with an operator key or the admin key)`,
        '',
      ].join('\n'),
    );
    await signals.wait();
    await server.close();
    await closeAll();
  },
});
