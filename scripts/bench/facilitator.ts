/**
 * turnpike's facilitator vs the reference one (x402Facilitator + ExactEvmScheme from @x402/core
 * and @x402/evm, with viem's nonce manager and the same receipt polling), both over HTTP on one
 * sandbox chain, with the same kind of payments, alternating in one run.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createPublicClient, http } from 'viem';
import { networks } from '../../src/chain/networks.js';
import type { Sandbox } from '../../src/chain/sandbox/sandbox.js';
import { v2Request } from '../../test/helpers/payments.js';
import { type Row, summarize } from './stats.js';

const network = networks.local;

type Body = Awaited<ReturnType<typeof v2Request>>;

/** Each facilitator runs in a process of its own, as it would in production, so neither shares
 * an event loop with the other or with the load generator. */
async function startServer(kind: 'turnpike' | 'reference', sandbox: Sandbox, relayers: number[]): Promise<{ url: string; close(): Promise<void> }> {
  const keys = relayers.map((i) => sandbox.accounts.relayers[i]!.privateKey);
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./facilitator-server.ts', import.meta.url)), kind, sandbox.rpcUrl, ...keys], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [line] = (await once(createInterface({ input: child.stdout }), 'line')) as [string];
  const exited = once(child, 'exit');
  return { url: JSON.parse(line).url, close: async () => void (child.kill(), await exited) };
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
  // Relayer 0 is the reference's, 1 is turnpike's single key, 2-5 its four keys.
  const [reference, turnpike, turnpike4] = await Promise.all([
    startServer('reference', sandbox, [0]),
    startServer('turnpike', sandbox, [1]),
    startServer('turnpike', sandbox, [2, 3, 4, 5]),
  ]);
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
    const t4 = await drive(`${turnpike4.url}/settle`, await payments(sandbox, 400), 16, valid);
    rows.push({
      path: 'settle, concurrency 16',
      subject: 'turnpike with 4 relayer keys',
      p50Ms: t4.p50,
      p99Ms: t4.p99,
      perSecond: t4.perSecond,
      note: `${(t4.perSecond / r.perSecond).toFixed(1)}× the reference's throughput${t4.failures ? `, ${t4.failures} failed` : ''}`,
    });

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
    await Promise.all([turnpike.close(), turnpike4.close(), reference.close()]);
  }
  return rows;
}
