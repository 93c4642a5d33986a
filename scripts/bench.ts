/**
 * `npm run bench [-- --json]`: every benchmark, side by side in one run, on loopback only.
 * Progress goes to stderr; the table (or JSON) to stdout.
 */
import os from 'node:os';
import { startSandbox } from '../src/chain/sandbox/sandbox.js';
import { benchCredits } from './bench/credits.js';
import { benchFacilitator, benchSettleOnBase } from './bench/facilitator.js';
import { benchInstances } from './bench/instances.js';
import { benchPaidOnBlocks } from './bench/paid-blocks.js';
import { benchProxy } from './bench/proxy.js';
import { benchSandbox } from './bench/sandbox.js';
import type { Row } from './bench/stats.js';

const json = process.argv.includes('--json');
const progress = (s: string) => process.stderr.write(`\r\x1b[2K${s}`);

const only = process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length);
const rows: Row[] = [];
if (!only || only === 'sandbox') rows.push(...(await benchSandbox(10, progress)));
for (const [name, bench] of [
  ['facilitator', benchFacilitator],
  ['settle-base', benchSettleOnBase],
  ['paid-blocks', benchPaidOnBlocks],
  ['proxy', benchProxy],
  ['credits', benchCredits],
  ['instances', benchInstances],
] as const) {
  if (only && only !== name) continue;
  const sandbox = await startSandbox({ payers: 32 });
  try {
    rows.push(...(await bench(sandbox, progress)));
  } finally {
    await sandbox.stop();
  }
}
process.stderr.write('\r\x1b[2K');

const machine = `${os.cpus().length}× ${os.cpus()[0]?.model ?? 'cpu'}, node ${process.version}`;
if (json) {
  process.stdout.write(`${JSON.stringify({ date: new Date().toISOString(), machine, rows }, null, 2)}\n`);
} else {
  const fmt = (ms: number) => (Number.isNaN(ms) ? '' : `${ms.toFixed(1)} ms`);
  process.stdout.write(`turnpike bench, ${new Date().toISOString().slice(0, 10)}, ${machine}\n\n`);
  process.stdout.write('| path | subject | calls/s | p50 | p99 | note |\n| --- | --- | --- | --- | --- | --- |\n');
  for (const r of rows) {
    const rate = r.perSecond === undefined ? '' : r.perSecond.toFixed(0);
    process.stdout.write(`| ${r.path} | ${r.subject} | ${rate} | ${fmt(r.p50Ms)} | ${fmt(r.p99Ms)} | ${r.note ?? ''} |\n`);
  }
}
