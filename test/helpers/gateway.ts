import { networks } from '../../src/chain/networks.js';
import { type GatewayOptions, createGateway } from '../../src/gateway/gateway.js';
import { createApp } from '../../src/http/app.js';
import { type Listening, listen } from '../../src/http/listen.js';
import { createMetrics } from '../../src/http/metrics.js';
import { createLogger } from '../../src/log/logger.js';

const logger = createLogger({ level: 'silent', format: 'json' });

/**
 * One paying gateway at `<url>/mcp` on a free loopback port, with the settings tests share (local
 * network, tool-result challenges, 1 MiB bodies, its own address as the only Host); the rest given.
 *
 * @example const gateway = await listenGateway({ upstream, plan, payTo, rails: [x402Rail({ facilitator })], server: 'test' });
 */
export async function listenGateway(
  options: Pick<GatewayOptions, 'upstream' | 'plan' | 'payTo' | 'rails' | 'server'> & Partial<GatewayOptions>,
): Promise<Listening> {
  const app = createApp(logger);
  let url = '';
  app.route(
    '/mcp',
    createGateway({
      network: networks.local,
      challenge: 'tool-result',
      bodyLimitBytes: 1 << 20,
      allowedHosts: () => [new URL(url).host],
      logger,
      metrics: createMetrics(),
      ...options,
    }),
  );
  const served = await listen(app, { host: '127.0.0.1', port: 0 });
  url = served.url;
  return served;
}
