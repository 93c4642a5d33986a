import { type Call, answers } from './calls.js';
import type { Evidence } from './evidence.js';
import { faultKinds, type Fault } from './faults.js';
import type { Check } from './invariants.js';
import { type Theft, theftKinds } from './thief.js';

const countBy = <T>(items: T[], by: (item: T) => string) => {
  const counts: Record<string, number> = {};
  for (const item of items) counts[by(item)] = (counts[by(item)] ?? 0) + 1;
  return counts;
};

/** The numbers of a run: what was done to it, what the clients saw, what moved. */
export function summarize(run: {
  seconds: number;
  seed: number;
  calls: Call[];
  thefts: Theft[];
  faults: Fault[];
  evidence: Evidence;
  checks: Check[];
  /** Webhook deliveries the receiver failed on purpose (503 or a closed connection). */
  eventsFailed: number;
}) {
  const { calls, thefts, faults, evidence } = run;
  const all = calls.flatMap(answers);
  const valid = calls.filter((c) => !c.mistake).flatMap(answers);
  const settled = evidence.store.journal.filter((r) => r.state === 'settled');
  const ledger = evidence.store.ledger;
  return {
    ok: run.checks.every((c) => c.ok),
    seconds: run.seconds,
    seed: run.seed,
    faults: Object.fromEntries(faultKinds.map((k) => [k, faults.filter((f) => f.kind === k).length])),
    /** How long each fault kept its part down, ms. */
    downMs: Object.fromEntries(faultKinds.map((k) => [k, faults.filter((f) => f.kind === k).map((f) => f.ms)])),
    calls: {
      x402: calls.filter((c) => c.rail === 'x402').length,
      credits: calls.filter((c) => c.rail === 'credits').length,
      mistakes: calls.filter((c) => c.mistake).length,
    },
    requests: all.length,
    answers: countBy(all, (a) => (a.status === 'connection' ? `no answer (${a.reason})` : `${a.status} ${a.kind}`)),
    serverErrorsForValidCalls: countBy(
      valid.filter((a) => typeof a.status === 'number' && a.status >= 500),
      (a) => `${a.status} ${a.reason ?? a.kind}`,
    ),
    executions: countBy(evidence.executions, (e) => e.tool),
    x402: { settledPayments: settled.length, usdcMovedAtomic: settled.reduce((s, r) => s + r.amount, 0n).toString() },
    credits: {
      debits: ledger.filter((e) => e.kind === 'debit').length,
      refunds: ledger.filter((e) => e.kind === 'refund').length,
      chargedMicroUsd: (-ledger.filter((e) => e.kind === 'debit' || e.kind === 'refund').reduce((s, e) => s + e.amount, 0n)).toString(),
    },
    /** The thief's attempts, by kind, and those that got something (check 11 says what). */
    thief: {
      attempts: thefts.length,
      byKind: Object.fromEntries(theftKinds.map((k) => [k, thefts.filter((t) => t.kind === k).length])),
      succeeded: thefts.filter((t) => t.stolen.length > 0 || (t.served ?? 0) > 1).length,
    },
    events: {
      recorded: evidence.store.events.length,
      delivered: evidence.store.deliveries.filter((d) => d.state === 'delivered').length,
      failedOnPurpose: run.eventsFailed,
    },
    turnpikeLog: evidence.logProblems,
    checks: run.checks,
  };
}
export type Summary = ReturnType<typeof summarize>;

export function formatReport(s: Summary, dir: string): string {
  const lines = [
    `turnpike chaos: ${s.seconds} s, seed ${s.seed}`,
    `  faults       ${Object.entries(s.downMs)
      .map(([k, ms]) => `${k} ${ms.length}${ms.length ? ` (down ${ms.map((m) => `${(m / 1000).toFixed(1)}`).join(', ')} s)` : ''}`)
      .join(', ')}`,
    `  calls        ${s.calls.x402} x402, ${s.calls.credits} credits (${s.calls.mistakes} mistakes on purpose), ${s.requests} requests`,
    `  answers      ${Object.entries(s.answers)
      .map(([k, n]) => `${k}: ${n}`)
      .join(', ')}`,
    `  5xx (valid)  ${
      Object.entries(s.serverErrorsForValidCalls)
        .map(([k, n]) => `${k}: ${n}`)
        .join(', ') || 'none'
    }`,
    `  executions   ${Object.entries(s.executions)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ')}`,
    `  x402         ${s.x402.settledPayments} payments settled, ${s.x402.usdcMovedAtomic} USDC atomic units moved`,
    `  events       ${s.events.recorded} recorded, ${s.events.delivered} delivered, ${s.events.failedOnPurpose} deliveries failed on purpose`,
    `  turnpike log ${
      Object.entries(s.turnpikeLog)
        .map(([k, n]) => `${k} ×${n}`)
        .join('; ') || 'no errors or warnings'
    }`,
    `  thief        ${s.thief.attempts} attempts (${Object.entries(s.thief.byKind)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ')}), ` + `${s.thief.succeeded} got something`,
    `  credits      ${s.credits.debits} debits, ${s.credits.refunds} refunds, ${s.credits.chargedMicroUsd} micro-USD charged`,
    '',
    ...s.checks.flatMap((c) => [
      `${c.ok ? 'PASS' : 'FAIL'}  ${c.name}: ${c.summary}`,
      ...c.violations.slice(0, 10).map((v) => `        ${v}`),
      ...(c.violations.length > 10 ? [`        … and ${c.violations.length - 10} more`] : []),
    ]),
    '',
    s.ok ? 'all invariants hold' : `INVARIANTS FAILED; evidence (logs, store, executions) kept in ${dir}`,
  ];
  return `${lines.join('\n')}\n`;
}
