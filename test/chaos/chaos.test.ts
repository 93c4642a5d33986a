import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { containers } from '../../scripts/chaos/processes.js';
import type { Summary } from '../../scripts/chaos/report.js';

/** Runs one soak of `scripts/chaos.ts` and answers its report, failing on any broken invariant. */
async function soak(settlement: 'strict' | 'deferred', seed: number): Promise<Summary> {
  const args = ['--import', 'tsx', 'scripts/chaos.ts', '--seconds', '15', '--seed', String(seed), '--settlement', settlement, '--json'];
  const run = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  run.stdout.on('data', (c) => (stdout += c));
  run.stderr.on('data', (c) => (stderr += c));
  const [code] = (await once(run, 'exit')) as [number | null];
  assert.ok(stdout.trim().startsWith('['), `no report (exit ${code}):\n${stderr}`);
  const [report] = JSON.parse(stdout) as Summary[];
  const failed = report!.checks.filter((c) => !c.ok).map((c) => `${c.name}:\n  ${c.violations.slice(0, 5).join('\n  ')}`);
  assert.deepEqual(failed, [], `invariants failed (seed ${report!.seed}):\n${failed.join('\n')}`);
  assert.equal(code, 0, stderr);
  assert.equal(report!.checks.length, settlement === 'deferred' ? 15 : 14, 'every check ran');
  return report!;
}

const name =
  'chaos, short: SIGKILLed turnpike (in a container too), stalled RPC, crashing upstream, an upstream looping back to turnpike, a thief, a failing webhook receiver, and the money and the events still add up';
test(name, { timeout: 90_000 }, async () => {
  const report = await soak('strict', 7);

  // Faults were really injected, and money really moved through both rails meanwhile.
  assert.ok(report.faults.turnpike_kill! >= 1, 'turnpike was never killed');
  if (containers) assert.ok(report.faults.container_restart! >= 1, 'turnpike was never restarted as PID 1 of a new PID namespace');
  assert.ok(report.faults.rpc_stall! >= 1, 'the RPC never stalled');
  assert.ok(report.faults.upstream_crash! >= 1, 'the upstream never crashed');
  assert.ok(report.faults.upstream_loop! >= 1, 'the upstream never looped back to turnpike');
  assert.ok(report.x402.settledPayments > 0, 'no x402 payment settled');
  assert.ok(report.credits.debits > report.credits.refunds, 'no debit stood');
  assert.ok(report.calls.mistakes > 0, 'no mistakes were made');
  assert.ok(report.executions.ok! > 0 && report.executions.fail! > 0, 'the tools did not run');
  assert.ok(report.events.delivered > 0 && report.events.failedOnPurpose > 0, 'no event was delivered, or none was retried');
  // The thief really tried, every way it knows.
  assert.ok(report.thief.attempts > 0, 'the thief never acted');
  for (const [kind, n] of Object.entries(report.thief.byKind)) assert.ok(n > 0, `the thief never tried ${kind}`);
});

test('chaos, deferred settlement on 2 s blocks: payers who empty their wallets after a burst lose turnpike at most the cap each and are refused, and everything else still adds up', {
  timeout: 120_000,
}, async () => {
  const report = await soak('deferred', 11);
  assert.ok(report.x402.settledPayments > 0, 'no x402 payment settled');
  assert.ok(report.faults.turnpike_kill! >= 1, 'turnpike was never killed');
});
