import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Hono } from 'hono';
import { networks } from '../../src/chain/networks.js';
import { createGateway } from '../../src/gateway/gateway.js';
import { adminRoutes } from '../../src/http/admin-routes.js';
import { createApp } from '../../src/http/app.js';
import { type Listening, listen } from '../../src/http/listen.js';
import { createMetrics } from '../../src/http/metrics.js';
import { createLogger } from '../../src/log/logger.js';
import { revenueBook } from '../../src/operators/revenue.js';
import { planSchema } from '../../src/pricing/plans.js';
import { createCredits } from '../../src/rails/credits/credits.js';
import { openDebits, openLedgerDebits } from '../../src/rails/credits/open-debits.js';
import { creditsRail } from '../../src/rails/credits/rail.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { postToolCall } from '../helpers/gateway.js';

const logger = createLogger({ level: 'silent', format: 'json' });
const ADMIN = 'admin-key-for-tests-0123456789abcdef';
const servers: Listening[] = [];
let base = '';
const closing: (() => Promise<unknown>)[] = [];

/**
 * A call is counted among the caller's calls this month while it runs, and a call that fails is
 * given back only when it ends. On a plan whose tiers get cheaper (volume discounts, or
 * paid-then-free), calls made to fail slowly would push the caller's real calls, made meanwhile,
 * into the cheaper tier: a call is priced at the highest price of the positions from the month's
 * delivered calls + 1 to its number (`overlappingPrice`).
 */
describe('metering: calls in flight that then fail', () => {
  before(async () => {
    const upstream = new Hono();
    upstream.post('/mcp', async (c) => {
      const msg = (await c.req.json()) as { id: unknown; params: { name: string } };
      if (msg.params.name === 'slowfail') {
        await new Promise((r) => setTimeout(r, 1500));
        return c.json({ jsonrpc: '2.0', id: msg.id, result: { isError: true, content: [{ type: 'text', text: 'no' }] } });
      }
      return c.json({ jsonrpc: '2.0', id: msg.id, result: { content: [{ type: 'text', text: 'ok' }] } });
    });
    const up = await listen(upstream, { host: '127.0.0.1', port: 0 });
    servers.push(up);
    const store = await openSqliteStore({ path: path.join(mkdtempSync(path.join(os.tmpdir(), 'tp-meter-')), 's.db') });
    const credits = createCredits({ store, tokenSecret: await store.instanceSecret('budget-tokens') });
    const debits = openDebits(openLedgerDebits(store.credits), { maxCallMs: async () => 20_000 });
    const book = revenueBook(store, { takeRateBps: 0, logger });
    closing.push(
      () => book.stop(),
      () => store.close(),
    );
    const app = createApp(logger);
    app.route(
      '/mcp/discount',
      createGateway({
        upstream: { url: `${up.url}/mcp`, headers: {}, timeoutMs: 10_000 },
        plan: planSchema.parse({ type: 'tiered', tiers: [{ upTo: 3, price: '0.01' }, { price: '0.001' }] }),
        payTo: '0x000000000000000000000000000000000000dEaD',
        network: networks.local,
        rails: [creditsRail({ credits, store, debits })],
        challenge: 'tool-result',
        bodyLimitBytes: 1 << 16,
        allowedHosts: () => [new URL(base).host],
        logger,
        metrics: createMetrics(),
        server: 'discount',
        revenue: { book, usage: store.operators, custody: 'direct' },
      }),
    );
    app.route('/admin', adminRoutes({ credits, store, adminKey: ADMIN, catalog: [] }));
    const server = await listen(app, { host: '127.0.0.1', port: 0 });
    servers.push(server);
    base = server.url;
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.close()));
    for (const close of closing) await close();
  });

  test('calls made to fail slowly, in flight meanwhile, do not move the caller’s real calls to a later, cheaper tier', async () => {
    const res = await fetch(`${base}/admin/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'attacker', usd: '1' }),
    });
    const { key } = (await res.json()) as { key: string };
    const h = { authorization: `Bearer ${key}` };
    // Three calls of a tool that fails after 1.5 s (refunded and given back), then three real calls while they run.
    const phantoms = [1, 2, 3].map(() => postToolCall(`${base}/mcp/discount`, 'slowfail', h));
    await new Promise((r) => setTimeout(r, 300));
    const charged: string[] = [];
    for (let i = 0; i < 3; i++) {
      const body = (await (await postToolCall(`${base}/mcp/discount`, 'real', h)).json()) as any;
      charged.push(body.result?._meta?.['turnpike/credits']?.charged);
    }
    await Promise.all(phantoms);
    // The caller's first three delivered calls are in the first tier (priced by their number alone: 1000 each, the second).
    assert.deepEqual(charged, ['10000', '10000', '10000']);
    // Those three delivered and the others given back, the fourth is in the second tier.
    const fourth = (await (await postToolCall(`${base}/mcp/discount`, 'real', h)).json()) as any;
    assert.equal(fourth.result?._meta?.['turnpike/credits']?.charged, '1000');
  });
});
