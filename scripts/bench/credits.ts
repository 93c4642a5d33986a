/**
 * Credits-paid calls through the gateway against the same trivial upstream called directly, in
 * one run: the added latency of a call paid from an API key's balance (hash lookup, atomic
 * debit committed to SQLite with synchronous=FULL, forward, receipt), and debits per second at
 * concurrency 16.
 */
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createPublicClient } from 'viem';
import { networks } from '../../src/chain/networks.js';
import { rpcTransport } from '../../src/chain/rpc-transport.js';
import type { Sandbox } from '../../src/chain/sandbox/sandbox.js';
import { createFacilitator } from '../../src/facilitator/facilitator.js';
import { createGateway } from '../../src/gateway/gateway.js';
import { priceTableSchema } from '../../src/gateway/pricing.js';
import { createApp } from '../../src/http/app.js';
import { listen } from '../../src/http/listen.js';
import { createMetrics } from '../../src/http/metrics.js';
import { createLogger } from '../../src/log/logger.js';
import { createCredits } from '../../src/rails/credits/credits.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { startChild } from './child.js';
import { callBody, closeLoad, drive } from './mcp-load.js';
import type { Row } from './stats.js';

export async function benchCredits(sandbox: Sandbox, progress: (s: string) => void): Promise<Row[]> {
  const logger = createLogger({ level: 'silent', format: 'json' });
  const upstream = await startChild('./trivial-upstream.ts', []);
  const store = await openSqliteStore({ path: path.join(mkdtempSync(path.join(os.tmpdir(), 'turnpike-bench-')), 'credits.db') });
  const client = createPublicClient({ chain: networks.local.viemChain, transport: rpcTransport(sandbox.rpcUrl) });
  const facilitator = createFacilitator({ network: networks.local, client, journal: store.journal, relayerKeys: [sandbox.accounts.relayers[3]!.privateKey] });
  const credits = createCredits({ store, tokenSecret: await store.instanceSecret('budget-tokens') });
  const { secret, key } = await credits.createKey({ name: 'bench' }, { amount: 1_000_000_000_000n, reason: 'bench', idempotencyKey: 'bench' });
  let url = '';
  const app = createApp(logger);
  app.route(
    '/mcp',
    createGateway({
      upstream: { url: upstream.url, headers: {}, timeoutMs: 30_000 },
      prices: priceTableSchema.parse({ default: '0.001' }),
      payTo: sandbox.accounts.payees[0]!.address,
      network: networks.local,
      facilitator,
      challenge: 'tool-result',
      bodyLimitBytes: 1 << 20,
      allowedHosts: () => [new URL(url).host],
      logger,
      metrics: createMetrics(),
      server: 'bench',
      credits: { credits, store },
    }),
  );
  const gateway = await listen(app, { host: '127.0.0.1', port: 0 });
  url = gateway.url;
  const viaTurnpike = `${gateway.url}/mcp`;
  const auth = { authorization: `Bearer ${secret}` };
  const rows: Row[] = [];
  try {
    const warm = Array.from({ length: 3000 }, () => callBody('echo', {}));
    await drive(upstream.url, warm, 8);
    await drive(viaTurnpike, warm, 8, auth);
    for (const concurrency of [1, 16]) {
      progress(`credits: paid calls at concurrency ${concurrency}`);
      const bodies = Array.from({ length: concurrency === 1 ? 2000 : 8000 }, () => callBody('echo', {}));
      const direct = await drive(upstream.url, bodies, concurrency);
      const paid = await drive(viaTurnpike, bodies, concurrency, auth);
      const label = `credits-paid tools/call, trivial upstream, concurrency ${concurrency}`;
      rows.push({ path: label, subject: 'upstream called directly (unpaid)', p50Ms: direct.p50, p99Ms: direct.p99, perSecond: direct.perSecond });
      rows.push({
        path: label,
        subject: 'through turnpike, debited from a key',
        p50Ms: paid.p50,
        p99Ms: paid.p99,
        perSecond: paid.perSecond,
        note: `+${(paid.p50 - direct.p50).toFixed(2)} ms p50; ${paid.perSecond.toFixed(0)} debits/s`,
      });
    }
    const balance = (await store.credits.key(key.id))!.balance;
    const expected = 1_000_000_000_000n - 1000n * BigInt(3000 + 2000 + 8000);
    if (balance !== expected) throw new Error(`credits bench: balance ${balance}, expected ${expected}: debits were lost or doubled`);
  } finally {
    await gateway.close();
    await upstream.close();
    await store.close();
    closeLoad();
  }
  return rows;
}
