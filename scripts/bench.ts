/**
 * `npm run bench [-- --json]`: every benchmark, side by side in one run, on loopback only.
 * Progress goes to stderr; the table (or JSON) to stdout.
 */
import os from 'node:os';
import { benchSandbox } from './bench/sandbox.js';
import type { Row } from './bench/stats.js';

const json = process.argv.includes('--json');
const progress = (s: string) => process.stderr.write(`\r\x1b[2K${s}`);

const rows: Row[] = [...(await benchSandbox(10, progress))];
process.stderr.write('\r\x1b[2K');

const machine = `${os.cpus().length}× ${os.cpus()[0]?.model ?? 'cpu'}, node ${process.version}`;
if (json) {
  process.stdout.write(`${JSON.stringify({ date: new Date().toISOString(), machine, rows }, null, 2)}\n`);
} else {
  const fmt = (ms: number) => `${ms.toFixed(1)} ms`;
  process.stdout.write(`turnpike bench, ${new Date().toISOString().slice(0, 10)}, ${machine}\n\n`);
  process.stdout.write('| path | subject | p50 | p99 | note |\n| --- | --- | --- | --- | --- |\n');
  for (const r of rows) {
    process.stdout.write(`| ${r.path} | ${r.subject} | ${fmt(r.p50Ms)} | ${fmt(r.p99Ms)} | ${r.note ?? ''} |\n`);
  }
}
