/**
 * Credits-paid calls through the gateway against the same trivial upstream called directly, in
 * one run: the added latency of a call paid from an API key's balance (hash lookup, atomic
 * debit committed to SQLite and its WAL synced before the answer, forward, receipt), and debits per second at
 * concurrency 16; beside them a minimal in-memory credits proxy (memory-proxy.ts: balances in a
 * Map, nothing durable) and a free tool through the same gateway (the passthrough), and the
 * resident memory of both proxies at idle and after the load. Gateway, peer, upstream and load
 * generator each run in their own process. The four take turns in rounds, and a throughput is
 * given as the median of its ratios to direct's in the same round.
 */
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Sandbox } from '../../src/chain/sandbox/sandbox.js';
import { createCredits } from '../../src/rails/credits/credits.js';
import { openStore } from '../../src/store/open.js';
import { cpuMs, rssMb, startChild } from './child.js';
import { callBody, closeLoad, drive } from './mcp-load.js';
import { type Row, summarize } from './stats.js';

const PRICE = 1000n;
const FUNDS = 1_000_000_000_000n;
/** The tool credits-gateway.ts prices at zero: the free passthrough. */
const FREE_TOOL = 'free_echo';
/** Rounds each concurrency's calls are split into, the subjects taking turns. */
const ROUNDS = 5;
type Result = { p50: number; p99: number; perSecond: number; ratio: number; cpuUs: number };
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

export async function benchCredits(sandbox: Sandbox, progress: (s: string) => void): Promise<Row[]> {
  const db = path.join(mkdtempSync(path.join(os.tmpdir(), 'turnpike-bench-')), 'credits.db');
  const secret = await fundedKey(`sqlite:${db}`, FUNDS);
  const upstream = await startChild('./trivial-upstream.ts', []);
  const peer = await startChild('./memory-proxy.ts', [upstream.url, secret, FUNDS.toString(), PRICE.toString()]);
  const gateway = await startChild(
    './credits-gateway.ts',
    [upstream.url, sandbox.rpcUrl, `sqlite:${db}`, sandbox.accounts.relayers[3]!.privateKey],
    { turnpike: true },
  );
  const auth = { authorization: `Bearer ${secret}` };
  const rows: Row[] = [];
  const memory = (subject: string, idle: number, loaded: number): Row => ({
    path: 'resident memory (RSS)',
    subject,
    p50Ms: Number.NaN,
    p99Ms: Number.NaN,
    note: `${idle.toFixed(0)} MB idle, ${loaded.toFixed(0)} MB after the load`,
  });
  const idle = { gateway: rssMb(gateway.pid), peer: rssMb(peer.pid) };
  let calls = 0n;
  try {
    const paid = (n: number) => Array.from({ length: n }, () => callBody('echo', {}));
    const free = (n: number) => Array.from({ length: n }, () => callBody(FREE_TOOL, {}));
    await drive(upstream.url, paid(3000), 8);
    await drive(peer.url, paid(3000), 8, auth);
    await drive(gateway.url, paid(3000), 8, auth);
    await drive(gateway.url, free(3000), 8);
    calls += 3000n;
    for (const concurrency of [1, 16]) {
      progress(`credits: calls at concurrency ${concurrency}`);
      const n = concurrency === 1 ? 3000 : 12000;
      // In alternating rounds, each subject's throughput compared with direct's in the same round:
      // a machine that slows down for a while slows every subject of that round, not one of them.
      const subjects = [
        { name: 'direct', url: upstream.url, bodies: paid, pid: undefined },
        { name: 'inMemory', url: peer.url, bodies: paid, pid: peer.pid, headers: auth },
        { name: 'credits', url: gateway.url, bodies: paid, pid: gateway.pid, headers: auth },
        { name: 'passthrough', url: gateway.url, bodies: free, pid: gateway.pid },
      ] as const;
      type Tally = { latencies: number[]; seconds: number; cpuMs: number; ratios: number[] };
      const tally = Object.fromEntries(subjects.map((x) => [x.name, { latencies: [], seconds: 0, cpuMs: 0, ratios: [] } as Tally]));
      for (let round = 0; round < ROUNDS; round++) {
        const perSecond: Record<string, number> = {};
        for (let i = 0; i < subjects.length; i++) {
          const subject = subjects[(i + round) % subjects.length]!;
          const t = tally[subject.name]!;
          const before = subject.pid === undefined ? 0 : cpuMs(subject.pid);
          const r = await drive(subject.url, subject.bodies(n / ROUNDS), concurrency, 'headers' in subject ? subject.headers : undefined);
          if (subject.pid !== undefined) t.cpuMs += cpuMs(subject.pid) - before;
          t.latencies.push(...r.latencies);
          t.seconds += n / ROUNDS / r.perSecond;
          perSecond[subject.name] = r.perSecond;
        }
        for (const subject of subjects) tally[subject.name]!.ratios.push(perSecond[subject.name]! / perSecond.direct!);
      }
      calls += BigInt(n);
      const result = (name: string) => {
        const t = tally[name]!;
        const { p50, p99 } = summarize(t.latencies);
        return { p50, p99, perSecond: n / t.seconds, ratio: median(t.ratios), cpuUs: (t.cpuMs * 1000) / n };
      };
      const [direct, inMemory, credits, passthrough] = subjects.map((x) => result(x.name)) as [Result, Result, Result, Result];
      const label = `credits-paid tools/call, trivial upstream, concurrency ${concurrency}`;
      const added = (r: Result) =>
        `+${(r.p50 - direct.p50).toFixed(2)} ms p50; ${r.ratio.toFixed(2)}× direct throughput (median of ${ROUNDS} rounds); ${r.cpuUs.toFixed(0)} µs CPU per call`;
      const row = (subject: string, r: Result, note?: string): Row => ({
        path: label,
        subject,
        p50Ms: r.p50,
        p99Ms: r.p99,
        perSecond: r.perSecond,
        ...(note ? { note } : {}),
      });
      rows.push(
        row('upstream called directly (unpaid)', direct),
        row("in-memory credits proxy (bench stand-in for paygate-mcp's design)", inMemory, added(inMemory)),
        row(
          'through turnpike, debited from a key',
          credits,
          `${added(credits)}; ${(credits.ratio / inMemory.ratio).toFixed(2)}× the in-memory proxy`,
        ),
        row(
          'through turnpike, free tool (passthrough)',
          passthrough,
          `${added(passthrough)}; ${(passthrough.ratio / inMemory.ratio).toFixed(2)}× the in-memory proxy`,
        ),
      );
    }
    rows.push(memory('turnpike gateway', idle.gateway, rssMb(gateway.pid)), memory('in-memory credits proxy', idle.peer, rssMb(peer.pid)));
  } finally {
    await gateway.close();
    await peer.close();
    await upstream.close();
    closeLoad();
  }
  await checkBalance(`sqlite:${db}`, FUNDS - PRICE * calls, calls);
  return rows;
}

/** An API key with `funds` on the store at `url`; its secret. */
export async function fundedKey(url: string, funds: bigint): Promise<string> {
  const store = await openStore(url);
  try {
    const credits = createCredits({ store, tokenSecret: await store.instanceSecret('budget-tokens') });
    return (await credits.createKey({ name: 'bench' }, { amount: funds, reason: 'bench', idempotencyKey: `bench:${Date.now()}` })).secret;
  } finally {
    await store.close();
  }
}

/** The money must add up: every call debited exactly once (`expected`: what all keys hold together). */
export async function checkBalance(url: string, expected: bigint, calls: bigint): Promise<void> {
  const store = await openStore(url);
  try {
    const total = (await store.credits.keys()).reduce((sum, key) => sum + key.balance, 0n);
    if (total !== expected) throw new Error(`credits bench: balances ${total} after ${calls} calls: debits were lost or doubled`);
  } finally {
    await store.close();
  }
}
