/**
 * `npm run bench:ab -- <other checkout>`: two gateways side by side in one run, this tree's and
 * another checkout's (a worktree of an earlier commit, with its node_modules), each on its own
 * SQLite store with a funded key, in front of one trivial upstream; alternating rounds of 1,000
 * calls at one client and 4,000 at sixteen, credits-paid and free. Prints each gateway's CPU time
 * per call (from `/proc`) and median p50, and this tree's ratio to the other's: on a shared
 * machine, CPU per call moves far less than calls per second.
 *
 * @example git worktree add --detach ../base HEAD~3 && ln -s "$PWD/node_modules" ../base/ && npm run bench:ab -- ../base
 */
import { existsSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fundedKey } from './bench/credits.js';
import { cpuMs, startChild } from './bench/child.js';
import { callBody, closeLoad, drive } from './bench/mcp-load.js';

const ROUNDS = 4;
const base = process.argv[2] ? path.resolve(process.argv[2]) : undefined;
if (!base || !existsSync(path.join(base, 'scripts/bench/child.ts'))) {
  console.error('usage: npm run bench:ab -- <path of another turnpike checkout, with node_modules>');
  process.exit(2);
}
const { startChild: startBase } = (await import(path.join(base, 'scripts/bench/child.ts'))) as typeof import('./bench/child.js');
// Each gateway's store is made by its own checkout's code: the other may not open a newer schema.
const { fundedKey: fundedBase } = (await import(path.join(base, 'scripts/bench/credits.ts'))) as typeof import('./bench/credits.js');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'turnpike-ab-'));
const upstream = await startChild('./trivial-upstream.ts', []);
const gateway = async (start: typeof startChild, fund: typeof fundedKey, name: string) => {
  const store = `sqlite:${path.join(tmp, `${name}.db`)}`;
  const secret = await fund(store, 10n ** 15n);
  const child = await start('./credits-gateway.ts', [upstream.url, 'http://127.0.0.1:1', store, `0x${'11'.repeat(32)}`], {
    turnpike: true,
  });
  return { ...child, name, auth: { authorization: `Bearer ${secret}` } };
};
const gateways = [await gateway(startBase, fundedBase, 'base'), await gateway(startChild, fundedKey, 'this')];
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const results = new Map<string, { cpuUs: number[]; p50: number[] }>();
try {
  for (const tool of ['echo', 'free_echo']) {
    const bodies = (n: number) => Array.from({ length: n }, () => callBody(tool, {}));
    for (const g of gateways) await drive(g.url, bodies(3000), 8, g.auth);
    for (let round = 0; round < ROUNDS; round++) {
      process.stderr.write(`\r${tool}: round ${round + 1}/${ROUNDS}`);
      for (const [concurrency, n] of [
        [1, 1000],
        [16, 4000],
      ] as const) {
        for (const g of round % 2 ? [...gateways].reverse() : gateways) {
          const before = cpuMs(g.pid);
          const { p50 } = await drive(g.url, bodies(n), concurrency, g.auth);
          const key = `${tool === 'echo' ? 'credits' : 'free'} call, ${concurrency} client${concurrency > 1 ? 's' : ''}|${g.name}`;
          const entry = results.get(key) ?? { cpuUs: [], p50: [] };
          entry.cpuUs.push(((cpuMs(g.pid) - before) * 1000) / n);
          entry.p50.push(p50);
          results.set(key, entry);
        }
      }
    }
  }
} finally {
  for (const g of gateways) await g.close();
  await upstream.close();
  closeLoad();
}
process.stderr.write('\n');
console.log(`| median of ${ROUNDS} rounds, CPU per call / p50 | ${path.basename(base)} | this tree | ratio |\n| --- | --- | --- | --- |`);
for (const row of new Set([...results.keys()].map((k) => k.split('|')[0]!))) {
  const [a, b] = ['base', 'this'].map((name) => results.get(`${row}|${name}`)!);
  const cell = (r: { cpuUs: number[]; p50: number[] }) => `${median(r.cpuUs).toFixed(0)} µs / ${median(r.p50).toFixed(2)} ms`;
  console.log(
    `| ${row} | ${cell(a!)} | ${cell(b!)} | ${(median(b!.cpuUs) / median(a!.cpuUs)).toFixed(2)}× / ${(median(b!.p50) / median(a!.p50)).toFixed(2)}× |`,
  );
}
