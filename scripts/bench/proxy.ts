/**
 * The paying proxy against the same MCP server called directly, in one run: free calls
 * (pure proxy cost) and paid calls (verify, journal, forward, settle), sequentially and at
 * concurrency 16. Each call's own settlement wait is measured and taken out of that call's
 * latency, so "added" is turnpike's own cost; one at a time, it is given against the upstream
 * called back to back and against it idle between calls as long as a paid call leaves it.
 */
import { mkdtempSync } from 'node:fs';
import { flatPlan } from '../../src/pricing/plans.js';
import os from 'node:os';
import path from 'node:path';
import { x402Client } from '@x402/core/client';
import type { PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { createPublicClient } from 'viem';
import { networks } from '../../src/chain/networks.js';
import { rpcTransport } from '../../src/chain/rpc-transport.js';
import type { Sandbox } from '../../src/chain/sandbox/sandbox.js';
import { demoPrices } from '../../src/demo/server.js';
import { createFacilitator } from '../../src/facilitator/facilitator.js';
import { x402Rail } from '../../src/rails/x402/rail.js';
import { createGateway } from '../../src/gateway/gateway.js';
import { createApp } from '../../src/http/app.js';
import { listen } from '../../src/http/listen.js';
import { createMetrics } from '../../src/http/metrics.js';
import { createLogger } from '../../src/log/logger.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { startChild } from './child.js';
import { callBody, closeLoad, drive, post } from './mcp-load.js';
import { type Row, summarize } from './stats.js';

const nonceOf = (payment: unknown) => (payment as { payload: { authorization: { nonce: string } } }).payload.authorization.nonce;

export async function benchProxy(sandbox: Sandbox, progress: (s: string) => void): Promise<Row[]> {
  const logger = createLogger({ level: 'silent', format: 'json' });
  const upstream = await startChild('./upstream-server.ts', []);
  const client = createPublicClient({ chain: networks.local.viemChain, transport: rpcTransport(sandbox.rpcUrl), pollingInterval: 5 });
  const store = await openSqliteStore({ path: path.join(mkdtempSync(path.join(os.tmpdir(), 'turnpike-bench-')), 'proxy.db') });
  const facilitator = createFacilitator({
    network: networks.local,
    client,
    journal: store.journal,
    relayerKeys: [sandbox.accounts.relayers[2]!.privateKey],
  });
  // Each call's settlement wait, by authorization nonce.
  const settleMs = new Map<string, number>();
  const timed = {
    ...facilitator,
    settle: async (request: Parameters<typeof facilitator.settle>[0], purpose: string) => {
      const t = performance.now();
      const answer = await facilitator.settle(request, purpose);
      settleMs.set(nonceOf(request.paymentPayload), performance.now() - t);
      return answer;
    },
  };
  let url = '';
  const app = createApp(logger);
  app.route(
    '/mcp',
    createGateway({
      upstream: { url: upstream.url, headers: {}, timeoutMs: 30_000 },
      plan: flatPlan(demoPrices),
      payTo: sandbox.accounts.payees[0]!.address,
      network: networks.local,
      rails: [x402Rail({ facilitator: timed })],
      challenge: 'tool-result',
      bodyLimitBytes: 1 << 20,
      allowedHosts: () => [new URL(url).host],
      logger,
      metrics: createMetrics(),
      server: 'bench',
    }),
  );
  const gateway = await listen(app, { host: '127.0.0.1', port: 0 });
  url = gateway.url;
  const viaTurnpike = `${gateway.url}/mcp`;

  const rows: Row[] = [];
  try {
    // Warm both paths up.
    const warm = Array.from({ length: 3000 }, () => callBody('hello', { name: 'bench' }));
    await drive(upstream.url, warm, 8);
    await drive(viaTurnpike, warm, 8);

    for (const concurrency of [1, 16]) {
      progress(`proxy: free calls at concurrency ${concurrency}`);
      const bodies = Array.from({ length: concurrency === 1 ? 1000 : 4000 }, () => callBody('hello', { name: 'bench' }));
      const direct = await drive(upstream.url, bodies, concurrency);
      const proxied = await drive(viaTurnpike, bodies, concurrency);
      rows.push({
        path: `free tools/call, concurrency ${concurrency}`,
        subject: 'upstream called directly',
        p50Ms: direct.p50,
        p99Ms: direct.p99,
        perSecond: direct.perSecond,
      });
      rows.push({
        path: `free tools/call, concurrency ${concurrency}`,
        subject: 'through turnpike',
        p50Ms: proxied.p50,
        p99Ms: proxied.p99,
        perSecond: proxied.perSecond,
        note: `+${(proxied.p50 - direct.p50).toFixed(2)} ms p50; ${(proxied.perSecond / direct.perSecond).toFixed(2)}× direct throughput`,
      });
    }

    // The challenge every paid call starts from, then one signed payment per call.
    const challenge = JSON.parse(await post(viaTurnpike, callBody('forecast', { city: 'Oslo' }))) as {
      result: { structuredContent: PaymentRequired };
    };
    const required = challenge.result.structuredContent;
    for (const concurrency of [1, 16]) {
      progress(`proxy: signing payments for paid calls at concurrency ${concurrency}`);
      const count = concurrency === 1 ? 200 : 600;
      const payments = await Promise.all(
        Array.from({ length: count }, (_, i) =>
          new x402Client()
            .register('eip155:8453', new ExactEvmScheme(sandbox.accounts.payers[i % sandbox.accounts.payers.length]!))
            .createPaymentPayload(required),
        ),
      );
      progress(`proxy: paid calls at concurrency ${concurrency}`);
      const bodies = payments.map((p) => callBody('forecast', { city: 'Oslo' }, p));
      const direct = await drive(upstream.url, bodies, concurrency);
      settleMs.clear();
      const paid = await drive(viaTurnpike, bodies, concurrency);
      const settle = summarize([...settleMs.values()]);
      const withoutSettlement = summarize(payments.map((p, i) => paid.latencies[i]! - settleMs.get(nonceOf(p))!));
      const added = (baseline: { p50: number; p99: number }) =>
        `+${(withoutSettlement.p50 - baseline.p50).toFixed(2)} ms p50, +${(withoutSettlement.p99 - baseline.p99).toFixed(2)} ms p99`;
      const path = `paid tools/call, concurrency ${concurrency}`;
      rows.push({
        path,
        subject: 'upstream called directly (unpaid), back to back',
        p50Ms: direct.p50,
        p99Ms: direct.p99,
        perSecond: direct.perSecond,
      });
      let versus = `added without it ${added(direct)}`;
      if (concurrency === 1) {
        // One call at a time leaves the upstream idle for each settlement wait, and a process woken
        // from idle answers slower than one kept busy: the fair baseline idles as long between calls.
        progress('proxy: the upstream called directly, idle between calls as paid calls leave it');
        const paced = await drive(upstream.url, bodies, concurrency, {}, settle.p50);
        rows.push({
          path,
          subject: `upstream called directly (unpaid), idle ${settle.p50.toFixed(0)} ms between calls`,
          p50Ms: paced.p50,
          p99Ms: paced.p99,
        });
        versus = `added without it ${added(paced)} vs the paced upstream (${added(direct)} vs back to back)`;
      }
      rows.push({
        path,
        subject: 'through turnpike, x402 verified + settled',
        p50Ms: paid.p50,
        p99Ms: paid.p99,
        perSecond: paid.perSecond,
        note: `${(paid.perSecond / direct.perSecond).toFixed(2)}× direct throughput; settlement wait p50 ${settle.p50.toFixed(2)} ms; ${versus}`,
      });
    }
  } finally {
    await gateway.close();
    await upstream.close();
    await store.close();
    closeLoad();
  }
  return rows;
}
