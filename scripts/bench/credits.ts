/**
 * Credits-paid calls through the gateway against the same trivial upstream called directly, in
 * one run: the added latency of a call paid from an API key's balance (hash lookup, atomic
 * debit committed to SQLite and its WAL synced before the answer, forward, receipt), and debits per second at
 * concurrency 16; beside them a minimal in-memory credits proxy (memory-proxy.ts: balances in a
 * Map, nothing durable) and a free tool through the same gateway (the passthrough), and the
 * resident memory of both proxies at idle and after the load. Gateway, peer, upstream and load
 * generator each run in their own process.
 */
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Sandbox } from '../../src/chain/sandbox/sandbox.js';
import { createCredits } from '../../src/rails/credits/credits.js';
import { openStore } from '../../src/store/open.js';
import { cpuMs, rssMb, startChild } from './child.js';
import { callBody, closeLoad, drive } from './mcp-load.js';
import type { Row } from './stats.js';

const PRICE = 1000n;
const FUNDS = 1_000_000_000_000n;
/** The tool credits-gateway.ts prices at zero: the free passthrough. */
const FREE_TOOL = 'free_echo';

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
      /** Drives `n` calls at the proxy `pid` and notes its CPU time per call. */
      const timed = async (pid: number, url: string, bodies: string[], headers?: Record<string, string>) => {
        const before = cpuMs(pid);
        const r = await drive(url, bodies, concurrency, headers);
        return { ...r, cpuUs: ((cpuMs(pid) - before) * 1000) / bodies.length };
      };
      const direct = await drive(upstream.url, paid(n), concurrency);
      const inMemory = await timed(peer.pid, peer.url, paid(n), auth);
      const credits = await timed(gateway.pid, gateway.url, paid(n), auth);
      const passthrough = await timed(gateway.pid, gateway.url, free(n));
      calls += BigInt(n);
      const label = `credits-paid tools/call, trivial upstream, concurrency ${concurrency}`;
      const added = (r: typeof credits) =>
        `+${(r.p50 - direct.p50).toFixed(2)} ms p50; ${(r.perSecond / direct.perSecond).toFixed(2)}× direct throughput; ${r.cpuUs.toFixed(0)} µs CPU per call`;
      const row = (subject: string, r: typeof direct, note?: string): Row => ({
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
          `${added(credits)}; ${(credits.perSecond / inMemory.perSecond).toFixed(2)}× the in-memory proxy`,
        ),
        row('through turnpike, free tool (passthrough)', passthrough, added(passthrough)),
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
