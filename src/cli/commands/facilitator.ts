import { connectConfiguredChain } from '../../app/chain.js';
import { loadConfig } from '../../config/load.js';
import { loadSecrets } from '../../config/secrets.js';
import { trustedProxiesOf } from '../../config/schema.js';
import { openFacilitator } from '../../app/payments.js';
import { createApp } from '../../http/app.js';
import { facilitatorRoutes } from '../../http/facilitator-routes.js';
import { healthRoutes } from '../../http/health.js';
import { listen } from '../../http/listen.js';
import { createLogger } from '../../log/logger.js';
import { defineCommand } from '../command.js';
import { checkPort, configOverrides, serverFlags, serverFlagsSchema } from '../server-flags.js';
import { listenForSignals } from '../signals.js';

export const facilitatorCommand = defineCommand({
  name: 'facilitator',
  summary: 'serve the x402 facilitator API (/verify, /settle, /supported), settling USDC with a relayer key',
  details:
    'Relayer keys come from TURNPIKE_RELAYER_KEY (comma-separated for several). With TURNPIKE_FACILITATOR_KEYS\n' +
    '(comma-separated, one per resource server) /verify and /settle want one as Authorization: Bearer <key>.\n' +
    'With --network local and no --rpc-url the sandbox starts in-process and its demo relayers settle.\n' +
    'Prints the URL once it serves.',
  flags: serverFlags,
  schema: serverFlagsSchema,
  async run(flags, io) {
    const signals = listenForSignals();
    const config = loadConfig({ file: flags.config, overrides: configOverrides(flags) });
    await checkPort(config);
    const logger = createLogger(config.log);
    const secrets = loadSecrets();
    const keys = secrets.facilitatorKeys;
    const chain = await connectConfiguredChain(config, secrets);
    const { store, facilitator, close } = await openFacilitator({ config, chain, logger }).catch(async (error) => {
      await chain.close();
      throw error;
    });

    const app = createApp(logger, { trustedProxies: trustedProxiesOf(config) });
    app.route(
      '/',
      facilitatorRoutes(facilitator, {
        bodyLimitBytes: config.http.bodyLimitBytes,
        logger,
        failuresPerMinute: config.facilitator.failuresPerMinute,
        ...(keys ? { apiKeys: keys } : {}),
      }),
    );
    app.route('/', healthRoutes({ client: chain.client, store }));
    const server = await listen(app, config.http);
    io.stdout.write(
      [
        `turnpike facilitator listening on ${server.url}`,
        `  network   ${chain.network.name} (${chain.network.caip2}), USDC ${chain.network.usdc.address}`,
        `  rpc       ${chain.shownRpcUrl}${chain.sandbox ? '  (local sandbox)' : ''}`,
        `  relayers  ${facilitator.relayers.join(', ')}`,
        `  api keys  ${keys ? `${keys.length} (TURNPIKE_FACILITATOR_KEYS)` : 'none: /verify and /settle are open'}`,
        '',
      ].join('\n'),
    );
    await signals.wait();
    await server.close();
    await close();
    await chain.close();
  },
});
