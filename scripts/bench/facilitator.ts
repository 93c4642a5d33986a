/**
 * turnpike's facilitator vs the reference one (x402Facilitator + ExactEvmScheme from @x402/core
 * and @x402/evm, with viem's nonce manager and the same receipt polling), both over HTTP on one
 * sandbox chain, with the same kind of payments, alternating in one run.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { x402Facilitator } from '@x402/core/facilitator';
import type { PaymentPayload, PaymentRequirements } from '@x402/core/types';
import { toFacilitatorEvmSigner } from '@x402/evm';
import { ExactEvmScheme } from '@x402/evm/exact/facilitator';
import { Hono } from 'hono';
import { createPublicClient, createWalletClient, http, nonceManager, publicActions } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { networks } from '../../src/chain/networks.js';
import type { Sandbox } from '../../src/chain/sandbox/sandbox.js';
import { createFacilitator } from '../../src/facilitator/facilitator.js';
import { createApp } from '../../src/http/app.js';
import { facilitatorRoutes } from '../../src/http/facilitator-routes.js';
import { type Listening, listen } from '../../src/http/listen.js';
import { createLogger } from '../../src/log/logger.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { v2Request } from '../../test/helpers/payments.js';
import { type Row, summarize } from './stats.js';

const network = networks.local;
const logger = createLogger({ level: 'silent', format: 'json' });

type Body = Awaited<ReturnType<typeof v2Request>>;

async function startTurnpike(sandbox: Sandbox, dir: string): Promise<Listening> {
  const store = await openSqliteStore({ path: path.join(dir, 'bench.db') });
  const client = createPublicClient({ chain: network.viemChain, transport: http(sandbox.rpcUrl), pollingInterval: network.receiptPollingMs });
  const facilitator = createFacilitator({
    network,
    client,
    journal: store.journal,
    relayerKeys: [sandbox.accounts.relayers[1]!.privateKey],
  });
  const app = createApp(logger);
  app.route('/', facilitatorRoutes(facilitator, { bodyLimitBytes: 1 << 20, logger }));
  return listen(app, { host: '127.0.0.1', port: 0 });
}

async function startReference(sandbox: Sandbox): Promise<Listening> {
  const account = privateKeyToAccount(sandbox.accounts.relayers[0]!.privateKey, { nonceManager });
  const client = createWalletClient({
    account,
    chain: network.viemChain,
    transport: http(sandbox.rpcUrl),
    pollingInterval: network.receiptPollingMs,
  }).extend(publicActions);
  const facilitator = new x402Facilitator().register(
    network.caip2,
    // The reference's own docs pass a viem wallet client extended with public actions like this.
    new ExactEvmScheme(toFacilitatorEvmSigner({ ...client, address: account.address } as unknown as Parameters<typeof toFacilitatorEvmSigner>[0])),
  );
  const app = new Hono();
  type Request = { paymentPayload: PaymentPayload; paymentRequirements: PaymentRequirements };
  app.post('/verify', async (c) => {
    const body = await c.req.json<Request>();
    return c.json(await facilitator.verify(body.paymentPayload, body.paymentRequirements));
  });
  app.post('/settle', async (c) => {
    const body = await c.req.json<Request>();
    return c.json(await facilitator.settle(body.paymentPayload, body.paymentRequirements));
  });
  return listen(app, { host: '127.0.0.1', port: 0 });
}

/** Runs `bodies` through POST url with `concurrency` workers; latency per call and calls/s. */
async function drive(url: string, bodies: Body[], concurrency: number, expect: (r: Record<string, unknown>) => boolean) {
  const latencies: number[] = [];
  let failures = 0;
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < bodies.length) {
        const body = bodies[next++]!;
        const t = performance.now();
        const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
        const answer = (await res.json()) as Record<string, unknown>;
        latencies.push(performance.now() - t);
        if (!expect(answer)) failures++;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  return { ...summarize(latencies), perSecond: bodies.length / seconds, failures };
}

async function payments(sandbox: Sandbox, count: number): Promise<Body[]> {
  const payTo = sandbox.accounts.payees[0]!.address;
  return Promise.all(
    Array.from({ length: count }, (_, i) =>
      v2Request({ payer: sandbox.accounts.payers[i % sandbox.accounts.payers.length]!, payTo, amount: 10_000n }),
    ),
  );
}

async function relayerTxs(sandbox: Sandbox, index: number) {
  const client = createPublicClient({ chain: network.viemChain, transport: http(sandbox.rpcUrl) });
  return client.getTransactionCount({ address: sandbox.accounts.relayers[index]!.address });
}

export async function benchFacilitator(sandbox: Sandbox, progress: (s: string) => void): Promise<Row[]> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-bench-'));
  const turnpike = await startTurnpike(sandbox, dir);
  const reference = await startReference(sandbox);
  const rows: Row[] = [];
  const pair = (label: string, t: Awaited<ReturnType<typeof drive>>, r: Awaited<ReturnType<typeof drive>>, note = '') => {
    rows.push({ path: label, subject: 'reference (@x402/core + @x402/evm)', p50Ms: r.p50, p99Ms: r.p99, perSecond: r.perSecond, note: r.failures ? `${r.failures} failed` : '' });
    rows.push({
      path: label,
      subject: 'turnpike',
      p50Ms: t.p50,
      p99Ms: t.p99,
      perSecond: t.perSecond,
      note: `${(t.perSecond / r.perSecond).toFixed(1)}× throughput${t.failures ? `, ${t.failures} failed` : ''}${note}`,
    });
  };
  try {
    const valid = (a: Record<string, unknown>) => a.isValid === true || a.success === true;
    progress('facilitator: warming up');
    const warm = await payments(sandbox, 32);
    await drive(`${reference.url}/verify`, warm, 4, valid);
    await drive(`${turnpike.url}/verify`, warm, 4, valid);

    for (const concurrency of [1, 16]) {
      progress(`facilitator: verify at concurrency ${concurrency}`);
      const bodies = await payments(sandbox, concurrency === 1 ? 200 : 800);
      const r = await drive(`${reference.url}/verify`, bodies, concurrency, valid);
      const t = await drive(`${turnpike.url}/verify`, bodies, concurrency, valid);
      pair(`verify, concurrency ${concurrency}`, t, r);
    }

    progress('facilitator: settle at concurrency 16 (automine)');
    const r = await drive(`${reference.url}/settle`, await payments(sandbox, 200), 16, valid);
    const t = await drive(`${turnpike.url}/settle`, await payments(sandbox, 200), 16, valid);
    pair('settle, concurrency 16, one relayer key each', t, r);

    progress('facilitator: duplicate settles (20 payments × 8 concurrent copies)');
    const dupes = async (url: string, relayer: number) => {
      const before = await relayerTxs(sandbox, relayer);
      const bodies = (await payments(sandbox, 20)).flatMap((b) => Array.from({ length: 8 }, () => b));
      await drive(`${url}/settle`, bodies, 16, () => true);
      return (await relayerTxs(sandbox, relayer)) - before;
    };
    const refTxs = await dupes(reference.url, 0);
    const tpTxs = await dupes(turnpike.url, 1);
    rows.push({ path: 'duplicate settles (20 payments × 8)', subject: 'reference', p50Ms: NaN, p99Ms: NaN, note: `${refTxs} transactions broadcast (${refTxs - 20} wasted)` });
    rows.push({ path: 'duplicate settles (20 payments × 8)', subject: 'turnpike', p50Ms: NaN, p99Ms: NaN, note: `${tpTxs} transactions broadcast (${tpTxs - 20} wasted)` });
  } finally {
    await turnpike.close();
    await reference.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}
