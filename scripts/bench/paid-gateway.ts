/**
 * The paid-call bench's gateway, alone in its process as `turnpike wrap --network base` runs it:
 * the demo upstream at argv[2], the node at argv[3] served as Base (Base's block time and receipt
 * polling), its relayer key at argv[4]; one server at `/strict` and the same at `/deferred`
 * (`settlement: deferred`), on a fresh SQLite store. Prints `{"url"}` (the base URL).
 */
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createPublicClient } from 'viem';
import { networks } from '../../src/chain/networks.js';
import { rpcTransport } from '../../src/chain/rpc-transport.js';
import { demoPrices } from '../../src/demo/server.js';
import { createFacilitator } from '../../src/facilitator/facilitator.js';
import { settlementModes } from '../../src/facilitator/port.js';
import { createGateway } from '../../src/gateway/gateway.js';
import { createApp } from '../../src/http/app.js';
import { listen } from '../../src/http/listen.js';
import { createMetrics } from '../../src/http/metrics.js';
import { createLogger } from '../../src/log/logger.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { x402Rail } from '../../src/rails/x402/rail.js';
import { openSqliteStore } from '../../src/store/sqlite.js';

const [upstreamUrl, rpcUrl, relayerKey] = process.argv.slice(2) as [string, string, `0x${string}`];
const network = networks.base;
const logger = createLogger({ level: 'silent', format: 'json' });
const store = await openSqliteStore({ path: path.join(mkdtempSync(path.join(os.tmpdir(), 'turnpike-bench-')), 'paid.db') });
const client = createPublicClient({ chain: network.viemChain, transport: rpcTransport(rpcUrl), pollingInterval: network.receiptPollingMs });
const facilitator = createFacilitator({ network, client, journal: store.journal, relayerKeys: [relayerKey] });
let url = '';
const app = createApp(logger);
const metrics = createMetrics();
for (const settlement of settlementModes) {
  app.route(
    `/${settlement}`,
    createGateway({
      upstream: { url: upstreamUrl, headers: {}, timeoutMs: 30_000 },
      plan: flatPlan(demoPrices),
      payTo: '0x00000000000000000000000000000000000000aa',
      network,
      rails: [x402Rail({ facilitator })],
      settlement,
      challenge: 'tool-result',
      bodyLimitBytes: 1 << 20,
      allowedHosts: () => [new URL(url).host],
      logger,
      metrics,
      server: settlement,
    }),
  );
}
const server = await listen(app, { host: '127.0.0.1', port: 0 });
url = server.url;
process.stdout.write(`${JSON.stringify({ url: server.url })}\n`);
process.on(
  'SIGTERM',
  () =>
    void server
      .close()
      .then(() => facilitator.drain())
      .then(() => store.close())
      .finally(() => process.exit(0)),
);
