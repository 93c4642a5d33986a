/**
 * Credits-paid calls through the gateway against the same trivial upstream called directly, in
 * one run: the added latency of a call paid from an API key's balance (hash lookup, atomic
 * debit committed to SQLite with synchronous=FULL, forward, receipt), and debits per second at
 * concurrency 16. Gateway, upstream and load generator each run in their own process.
 */
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Sandbox } from '../../src/chain/sandbox/sandbox.js';
import { createCredits } from '../../src/rails/credits/credits.js';
import { openStore } from '../../src/store/open.js';
import { startChild } from './child.js';
import { callBody, closeLoad, drive } from './mcp-load.js';
import type { Row } from './stats.js';

const PRICE = 1000n;
const FUNDS = 1_000_000_000_000n;

export async function benchCredits(sandbox: Sandbox, progress: (s: string) => void): Promise<Row[]> {
  const db = path.join(mkdtempSync(path.join(os.tmpdir(), 'turnpike-bench-')), 'credits.db');
  const secret = await fundedKey(`sqlite:${db}`, FUNDS);
  const upstream = await startChild('./trivial-upstream.ts', []);
  const gateway = await startChild('./credits-gateway.ts', [
    upstream.url,
    sandbox.rpcUrl,
    `sqlite:${db}`,
    sandbox.accounts.relayers[3]!.privateKey,
  ]);
  const auth = { authorization: `Bearer ${secret}` };
  const rows: Row[] = [];
  let calls = 0n;
  try {
    const warm = Array.from({ length: 3000 }, () => callBody('echo', {}));
    await drive(upstream.url, warm, 8);
    await drive(gateway.url, warm, 8, auth);
    calls += BigInt(warm.length);
    for (const concurrency of [1, 16]) {
      progress(`credits: paid calls at concurrency ${concurrency}`);
      const bodies = Array.from({ length: concurrency === 1 ? 2000 : 8000 }, () => callBody('echo', {}));
      const direct = await drive(upstream.url, bodies, concurrency);
      const paid = await drive(gateway.url, bodies, concurrency, auth);
      calls += BigInt(bodies.length);
      const label = `credits-paid tools/call, trivial upstream, concurrency ${concurrency}`;
      rows.push({
        path: label,
        subject: 'upstream called directly (unpaid)',
        p50Ms: direct.p50,
        p99Ms: direct.p99,
        perSecond: direct.perSecond,
      });
      rows.push({
        path: label,
        subject: 'through turnpike, debited from a key',
        p50Ms: paid.p50,
        p99Ms: paid.p99,
        perSecond: paid.perSecond,
        note: `+${(paid.p50 - direct.p50).toFixed(2)} ms p50; ${(paid.perSecond / direct.perSecond).toFixed(2)}× direct throughput`,
      });
    }
  } finally {
    await gateway.close();
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
