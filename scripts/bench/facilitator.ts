/**
 * turnpike's facilitator vs the reference one (x402Facilitator + ExactEvmScheme from @x402/core
 * and @x402/evm, with viem's nonce manager and the same receipt polling), both over HTTP on one
 * sandbox chain, with the same kind of payments, alternating in one run.
 */
import http from 'node:http';
import { createPublicClient, http as viemHttp } from 'viem';
import { networks } from '../../src/chain/networks.js';
import type { Sandbox } from '../../src/chain/sandbox/sandbox.js';
import { v2Request } from '../../test/helpers/payments.js';
import { startChild } from './child.js';
import { sleep } from './paid-blocks.js';
import { type Row, summarize } from './stats.js';

const network = networks.local;

type Body = Awaited<ReturnType<typeof v2Request>>;

/** Each facilitator runs in a process of its own, as it would in production, so neither shares
 * an event loop with the other or with the load generator. */
const startServer = (kind: 'turnpike' | 'reference', sandbox: Sandbox, relayers: number[], flags: string[] = []) =>
  startChild('./facilitator-server.ts', [kind, sandbox.rpcUrl, ...relayers.map((i) => sandbox.accounts.relayers[i]!.privateKey), ...flags]);

/**
 * Runs `bodies` through POST url with `concurrency` workers; latency per call and calls/s.
 * node:http with keep-alive, not fetch: fetch costs the load generator ~4× the CPU per request,
 * CPU that the facilitators and anvil need on a 2-core machine.
 */
async function drive(url: string, bodies: Body[], concurrency: number, expect: (r: Record<string, unknown>) => boolean) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const post = (body: string) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const req = http.request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve(JSON.parse(text) as Record<string, unknown>));
      });
      req.on('error', reject);
      req.end(body);
    });
  const latencies: number[] = [];
  let failures = 0;
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < bodies.length) {
        const body = JSON.stringify(bodies[next++]!);
        const t = performance.now();
        const answer = await post(body);
        latencies.push(performance.now() - t);
        if (!expect(answer)) failures++;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  agent.destroy();
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
  const client = createPublicClient({ chain: network.viemChain, transport: viemHttp(sandbox.rpcUrl) });
  return client.getTransactionCount({ address: sandbox.accounts.relayers[index]!.address });
}

export async function benchFacilitator(sandbox: Sandbox, progress: (s: string) => void): Promise<Row[]> {
  // One relayer key each: relayer 0 is the reference's, relayer 1 turnpike's.
  const [reference, turnpike] = await Promise.all([startServer('reference', sandbox, [0]), startServer('turnpike', sandbox, [1])]);
  const rows: Row[] = [];
  const pair = (label: string, t: Awaited<ReturnType<typeof drive>>, r: Awaited<ReturnType<typeof drive>>, note = '') => {
    rows.push({
      path: label,
      subject: 'reference (@x402/core + @x402/evm)',
      p50Ms: r.p50,
      p99Ms: r.p99,
      perSecond: r.perSecond,
      note: r.failures ? `${r.failures} failed` : '',
    });
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
    const warm = await payments(sandbox, 400);
    await drive(`${reference.url}/verify`, warm, 16, valid);
    await drive(`${turnpike.url}/verify`, warm, 16, valid);

    for (const concurrency of [1, 16]) {
      progress(`facilitator: verify at concurrency ${concurrency}`);
      const bodies = await payments(sandbox, concurrency === 1 ? 300 : 3000);
      const r = await drive(`${reference.url}/verify`, bodies, concurrency, valid);
      const t = await drive(`${turnpike.url}/verify`, bodies, concurrency, valid);
      pair(`verify, concurrency ${concurrency}`, t, r);
    }

    progress('facilitator: settle at concurrency 16 (automine)');
    const r = await drive(`${reference.url}/settle`, await payments(sandbox, 600), 16, valid);
    const t = await drive(`${turnpike.url}/settle`, await payments(sandbox, 600), 16, valid);
    pair('settle, concurrency 16, one relayer key each', t, r);
    progress('facilitator: duplicate settles (20 payments × 8 concurrent copies)');
    // Each of the 20 payments is a different payer's: the payments settled are the payers a success names.
    const dupes = async (url: string, relayer: number) => {
      const before = await relayerTxs(sandbox, relayer);
      const bodies = (await payments(sandbox, 20)).flatMap((b) => Array.from({ length: 8 }, () => b));
      const settled = new Set<string>();
      await drive(`${url}/settle`, bodies, 16, (a) => {
        if (a.success === true) settled.add(String(a.payer).toLowerCase());
        return true;
      });
      const txs = (await relayerTxs(sandbox, relayer)) - before;
      // A Multicall3 batch carries several payments: one transaction per payment at most is not waste.
      return `${txs} transactions broadcast for ${settled.size} of 20 payments settled (${Math.max(0, txs - 20)} wasted)`;
    };
    const refNote = await dupes(reference.url, 0);
    const tpNote = await dupes(turnpike.url, 1);
    rows.push({ path: 'duplicate settles (20 payments × 8)', subject: 'reference', p50Ms: NaN, p99Ms: NaN, note: refNote });
    rows.push({ path: 'duplicate settles (20 payments × 8)', subject: 'turnpike', p50Ms: NaN, p99Ms: NaN, note: tpNote });
  } finally {
    await Promise.all([turnpike.close(), reference.close()]);
  }
  return rows;
}

/**
 * Settle latency, one at a time, with both facilitators told the node is Base (`--network base`,
 * Base's 2 s block time and its receipt polling) while it is a bare automining anvil: what an
 * operator testing on an anvil fork sees. Alternating, so both see the same chain.
 */
export async function benchSettleOnBase(sandbox: Sandbox, progress: (s: string) => void): Promise<Row[]> {
  const [reference, turnpike] = await Promise.all([
    startServer('reference', sandbox, [0], ['--network=base']),
    startServer('turnpike', sandbox, [1], ['--network=base']),
  ]);
  const valid = (a: Record<string, unknown>) => a.success === true;
  const rounds = { reference: [] as number[], turnpike: [] as number[] };
  let failures = 0;
  try {
    // 5 warm-up rounds (first fee and nonce look-ups, JIT), then 40 measured.
    for (let i = -5; i < 40; i++) {
      progress(`settle on --network base (bare anvil): ${i + 1}/40`);
      for (const [kind, server] of [
        ['reference', reference],
        ['turnpike', turnpike],
      ] as const) {
        const r = await drive(`${server.url}/settle`, await payments(sandbox, 1), 1, valid);
        if (i >= 0) rounds[kind].push(r.p50);
        failures += r.failures;
      }
    }
  } finally {
    await Promise.all([turnpike.close(), reference.close()]);
  }
  const note = `automining anvil served as Base; 40 sequential settles each after 5 warm-up${failures ? `, ${failures} failed` : ''}`;
  const automined = (['reference', 'turnpike'] as const).map((kind) => {
    const s = summarize(rounds[kind]);
    return { path: 'settle latency, --network base on a bare anvil', subject: kind, p50Ms: s.p50, p99Ms: s.p99, note };
  });
  return [...automined, ...(await settleOnBlocks(sandbox, progress))];
}

/**
 * Settle latency with Base's 2 s blocks (`evm_setIntervalMining 2`), both facilitators told the
 * node is Base: each round, one settle to each at the same moment (a random point of the block),
 * so both wait for the same block and the difference is how soon each notices it.
 */
async function settleOnBlocks(sandbox: Sandbox, progress: (s: string) => void): Promise<Row[]> {
  const [reference, turnpike] = await Promise.all([
    startServer('reference', sandbox, [0], ['--network=base']),
    startServer('turnpike', sandbox, [1], ['--network=base']),
  ]);
  const valid = (a: Record<string, unknown>) => a.success === true;
  const rounds = { reference: [] as number[], turnpike: [] as number[], ahead: [] as number[] };
  let failures = 0;
  try {
    await sandbox.mineEvery(2);
    for (let i = -3; i < 30; i++) {
      progress(`settle on 2 s blocks: ${i + 1}/30`);
      const [r, t] = await Promise.all([payments(sandbox, 1), payments(sandbox, 1)]);
      await sleep(Math.random() * 2000);
      const [ref, tp] = await Promise.all([drive(`${reference.url}/settle`, r, 1, valid), drive(`${turnpike.url}/settle`, t, 1, valid)]);
      failures += ref.failures + tp.failures;
      if (i < 0) continue;
      rounds.reference.push(ref.p50);
      rounds.turnpike.push(tp.p50);
      rounds.ahead.push(ref.p50 - tp.p50);
    }
  } finally {
    await sandbox.mineEvery(0);
    await Promise.all([turnpike.close(), reference.close()]);
  }
  const path = 'settle latency, --network base on 2 s blocks';
  const note = `same moment, same block; 30 rounds after 3 warm-up${failures ? `, ${failures} failed` : ''}`;
  const ahead = summarize(rounds.ahead);
  const behind = rounds.ahead.filter((d) => d < 0).length;
  const s = { reference: summarize(rounds.reference), turnpike: summarize(rounds.turnpike) };
  return [
    { path, subject: 'reference', p50Ms: s.reference.p50, p99Ms: s.reference.p99, note },
    {
      path,
      subject: 'turnpike',
      p50Ms: s.turnpike.p50,
      p99Ms: s.turnpike.p99,
      note: `ahead of the reference by ${ahead.p50.toFixed(1)} ms p50 per round (min ${ahead.min.toFixed(1)} ms); behind in ${behind} of 30 rounds`,
    },
  ];
}
