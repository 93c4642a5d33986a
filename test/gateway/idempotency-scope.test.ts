import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { networks } from '../../src/chain/networks.js';
import { x402Rail } from '../../src/rails/x402/rail.js';
import { creditsRail } from '../../src/rails/credits/rail.js';
import { createGateway } from '../../src/gateway/gateway.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { adminRoutes } from '../../src/http/admin-routes.js';
import { createApp } from '../../src/http/app.js';
import { creditsRoutes } from '../../src/http/credits-routes.js';
import { type Listening, listen } from '../../src/http/listen.js';
import { createMetrics } from '../../src/http/metrics.js';
import { createLogger } from '../../src/log/logger.js';
import { createCredits } from '../../src/rails/credits/credits.js';
import { openDebits, openLedgerDebits } from '../../src/rails/credits/open-debits.js';
import { useSandbox } from '../helpers/chain.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { postToolCall } from '../helpers/gateway.js';

const chain = useSandbox({ isolate: false });
const logger = createLogger({ level: 'silent', format: 'json' });
const ADMIN = 'admin-key-for-tests-0123456789abcdef';
const servers: Listening[] = [];
let alpha: Awaited<ReturnType<typeof startCounterUpstream>>;
let beta: Awaited<ReturnType<typeof startCounterUpstream>>;
let base = '';

const admin = (path: string, body: unknown) =>
  fetch(`${base}/admin${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });

const call = async (path: string, headers: Record<string, string>) => {
  const res = await postToolCall(`${base}${path}`, 'count', headers);
  return { status: res.status, headers: res.headers, text: await res.text() };
};

describe('Idempotency-Key replays stay in their scope', () => {
  before(async () => {
    [alpha, beta] = await Promise.all([startCounterUpstream(), startCounterUpstream()]);
    const opened = await chain.facilitator([3]);
    const store = opened.store;
    const credits = createCredits({ store, tokenSecret: await store.instanceSecret('budget-tokens') });
    const debits = openDebits(openLedgerDebits(store.credits), { maxCallMs: async () => 20_000 });
    const app = createApp(logger);
    for (const [slug, upstream] of [
      ['alpha', alpha],
      ['beta', beta],
    ] as const) {
      app.route(
        `/mcp/${slug}`,
        createGateway({
          upstream: { url: `${upstream.url}/mcp`, headers: {}, timeoutMs: 10_000 },
          plan: flatPlan(priceTableSchema.parse({ default: '0.02' })),
          payTo: chain.sandbox.accounts.payees[1]!.address,
          network: networks.local,
          rails: [creditsRail({ credits, store, debits }), x402Rail({ facilitator: opened.facilitator })],
          challenge: 'tool-result',
          bodyLimitBytes: 1 << 16,
          allowedHosts: () => [new URL(base).host],
          logger,
          metrics: createMetrics(),
          server: slug,
        }),
      );
    }
    const topup = { payTo: chain.sandbox.accounts.payees[0]!.address, min: 1_000_000n, max: 100_000_000n };
    app.route('/credits', creditsRoutes({ credits, store, facilitator: opened.facilitator, network: networks.local, topup }));
    app.route('/admin', adminRoutes({ credits, store, adminKey: ADMIN, catalog: [] }));
    const server = await listen(app, { host: '127.0.0.1', port: 0 });
    servers.push(server);
    base = server.url;
  });
  after(() => Promise.all([...servers.map((s) => s.close()), alpha.close(), beta.close()]));

  test('a budget token scoped to server beta does not get, under the same Idempotency-Key, the result another token of its key bought on server alpha', async () => {
    const created = (await (await admin('/keys', { name: 'owner', usd: '1' })).json()) as { id: string; key: string };
    const mint = async (servers: string[]) => {
      const res = await fetch(`${base}/credits/tokens`, {
        method: 'POST',
        headers: { authorization: `Bearer ${created.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ capUsd: '0.10', scope: { servers } }),
      });
      assert.equal(res.status, 201, await res.clone().text());
      return ((await res.json()) as { token: string }).token;
    };
    const [tokenAlpha, tokenBeta] = [await mint(['alpha']), await mint(['beta'])];

    // tokenBeta may not pay on alpha at all.
    assert.equal((await call('/mcp/alpha', { authorization: `Bearer ${tokenBeta}` })).status, 403);

    const bought = await call('/mcp/alpha', { authorization: `Bearer ${tokenAlpha}`, 'idempotency-key': 'job-1' });
    assert.equal(bought.status, 200);
    const betaRuns = beta.runs();
    const replay = await call('/mcp/beta', { authorization: `Bearer ${tokenBeta}`, 'idempotency-key': 'job-1' });
    assert.equal(replay.status, 409, replay.text);
    assert.match(replay.text, /idempotency_key_reused/);
    assert.equal(replay.headers.get('idempotent-replayed'), null);
    assert.equal(beta.runs(), betaRuns);
  });
});
