/**
 * The credits bench's gateway, alone in its process as in production: the trivial upstream at
 * argv[2], the sandbox at argv[3], the store URL at argv[4] (SQLite file, or PostgreSQL shared by
 * several of these), its relayer key at argv[5]. The bench makes the API key. Prints `{"url"}`.
 * `TURNPIKE_BENCH_EVENTS=none` adds the revenue book and events as `serve` has them with no
 * endpoint; `=webhook` adds one webhook endpoint (a local sink answering 204, in this process): the
 * cost of events; `=outbox` records them for it but sends none (the worker stopped): the cost of
 * recording alone.
 * With TURNPIKE_BENCH_POSTPAID=1 the post-paid rail is asked first, as when Stripe is configured
 * (the bench's key has no post-paid account: the cost of that rail to everyone else's calls).
 * Started with lean-heap.ts preloaded (`startChild`'s `turnpike`), as turnpike's CLI sets up its heap.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent } from 'undici';
import { createEvents } from '../../src/events/endpoints.js';
import { revenueBook } from '../../src/operators/revenue.js';
import { createPublicClient } from 'viem';
import { networks } from '../../src/chain/networks.js';
import { rpcTransport } from '../../src/chain/rpc-transport.js';
import { createFacilitator } from '../../src/facilitator/facilitator.js';
import { x402Rail } from '../../src/rails/x402/rail.js';
import { creditsRail } from '../../src/rails/credits/rail.js';
import { createGateway } from '../../src/gateway/gateway.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { createApp } from '../../src/http/app.js';
import { listen } from '../../src/http/listen.js';
import { createMetrics } from '../../src/http/metrics.js';
import { createLogger } from '../../src/log/logger.js';
import { createCredits } from '../../src/rails/credits/credits.js';
import { openDebits, openLedgerDebits } from '../../src/rails/credits/open-debits.js';
import { billedServers, invoiceRail, openUsage } from '../../src/rails/invoice/rail.js';
import { openStore } from '../../src/store/open.js';

const [upstreamUrl, rpcUrl, storeUrl, relayerKey] = process.argv.slice(2) as [string, string, string, `0x${string}`];
const logger = createLogger({ level: 'silent', format: 'json' });
const store = await openStore(storeUrl);
const client = createPublicClient({ chain: networks.local.viemChain, transport: rpcTransport(rpcUrl) });
const facilitator = createFacilitator({ network: networks.local, client, journal: store.journal, relayerKeys: [relayerKey] });
const credits = createCredits({ store, tokenSecret: await store.instanceSecret('budget-tokens') });
const eventsMode = process.env.TURNPIKE_BENCH_EVENTS;
let revenue;
if (eventsMode === 'none' || eventsMode === 'webhook' || eventsMode === 'outbox') {
  const sink = createServer((req, res) => req.resume().on('end', () => res.writeHead(204).end()));
  await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
  const sinkUrl = `http://127.0.0.1:${(sink.address() as AddressInfo).port}/`;
  const agent = new Agent();
  const events = createEvents({
    store,
    instance: { webhooks: eventsMode === 'none' ? [] : [{ url: sinkUrl, secret: 'bench-secret' }] },
    allowPrivate: true,
    dispatchers: { operator: agent, instance: agent },
    retry: { firstDelayMs: 1_000, maxDelayMs: 60_000, maxAttempts: 5 },
    logger,
  });
  await events.start();
  if (eventsMode === 'outbox') await events.stop();
  const book = revenueBook(store, {
    takeRateBps: 0,
    logger,
    events: { wanted: events.wanted, unpaid: { perWindow: 60, windowMs: 60_000 } },
  });
  await book.start();
  revenue = { book, usage: store.operators, custody: 'direct' as const };
}
// As `serveGateway` does: the hosts served, set once the server listens.
let hosts: string[] = [];
const app = createApp(logger);
app.route(
  '/mcp',
  createGateway({
    upstream: { url: upstreamUrl, headers: {}, timeoutMs: 30_000 },
    plan: flatPlan(priceTableSchema.parse({ default: '0.001', free: ['free_echo'] })),
    payTo: '0x00000000000000000000000000000000000000aa',
    network: networks.local,
    rails: [
      ...(process.env.TURNPIKE_BENCH_POSTPAID === '1'
        ? [
            invoiceRail({
              credits,
              store,
              billed: billedServers(store.postpaid),
              usage: openDebits(openUsage(store.postpaid), { maxCallMs: async () => 40_000 }),
            }),
          ]
        : []),
      creditsRail({ credits, store, debits: openDebits(openLedgerDebits(store.credits), { maxCallMs: async () => 40_000 }) }),
      x402Rail({ facilitator }),
    ],
    challenge: 'tool-result',
    bodyLimitBytes: 1 << 20,
    allowedHosts: () => hosts,
    logger,
    metrics: createMetrics(),
    server: 'bench',
    ...(revenue ? { revenue } : {}),
  }),
);
const server = await listen(app, { host: '127.0.0.1', port: 0 });
hosts = [new URL(server.url).host];
process.stdout.write(`${JSON.stringify({ url: `${server.url}/mcp` })}\n`);
// A clean exit on the bench's SIGTERM, so a --cpu-prof of this process gets written.
process.on(
  'SIGTERM',
  () =>
    void server
      .close()
      .then(() => store.close())
      .finally(() => process.exit(0)),
);
