import { slugSchema } from '../pricing/slug.js';
import { z } from 'zod';

const DAY_MS = 86_400_000;
const MAX_DAYS = 366;

export type UsageRow = { key: string; calls: number; paidCalls: number; revenue: bigint; operatorShare: bigint };
export type Analytics = {
  byDay: UsageRow[];
  byTool: UsageRow[];
  byRail: UsageRow[];
  byCaller: UsageRow[];
  denials: { reason: string; count: number }[];
  settlement: { count: number; p50Ms?: number; p99Ms?: number };
  /** Results delivered on a deferred settlement that then failed on chain: not revenue. */
  losses: { count: number; amount: bigint };
};

/** Nearest-rank percentile of sorted values. */
const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;

/**
 * The analytics report from its sums: `byDay` keyed by days since the epoch (shown as UTC dates),
 * `settleMs` the settlement times in ascending order (reported as the median and the 99th percentile).
 */
export function analyticsReport(sums: Omit<Analytics, 'settlement'> & { settleMs: number[] }): Analytics {
  const { settleMs, ...usage } = sums;
  return {
    ...usage,
    byDay: usage.byDay.map((r) => ({ ...r, key: new Date(Number(r.key) * DAY_MS).toISOString().slice(0, 10) })),
    settlement: {
      count: settleMs.length,
      ...(settleMs.length > 0 ? { p50Ms: percentile(settleMs, 50), p99Ms: percentile(settleMs, 99) } : {}),
    },
  };
}

const isoDay = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, 'expected a UTC date, YYYY-MM-DD')
  .transform((d, ctx) => {
    const ms = Date.parse(`${d}T00:00:00Z`);
    if (Number.isNaN(ms) || new Date(ms).toISOString().slice(0, 10) !== d) {
      ctx.addIssue({ code: 'custom', message: `${d} is not a calendar date` });
      return z.NEVER;
    }
    return ms;
  });

/**
 * `from`/`to` are UTC days, both included (default: the last 30 days up to today); at most a
 * year apart. `server` narrows to one of the caller's servers.
 */
export const analyticsQuerySchema = z
  .strictObject({
    from: isoDay.optional(),
    to: isoDay.optional(),
    server: slugSchema.optional(),
    format: z.enum(['json', 'csv']).default('json'),
  })
  .transform((q, ctx) => {
    const today = Math.floor(Date.now() / DAY_MS) * DAY_MS;
    const to = (q.to ?? today) + DAY_MS;
    const from = q.from ?? to - 30 * DAY_MS;
    if (from >= to) ctx.addIssue({ code: 'custom', path: ['from'], message: 'from must not be after to' });
    if (to - from > MAX_DAYS * DAY_MS) ctx.addIssue({ code: 'custom', path: ['to'], message: `at most ${MAX_DAYS} days at once` });
    return { from, to, format: q.format, ...(q.server ? { server: q.server } : {}) };
  });

const row = (r: UsageRow) => ({
  key: r.key,
  calls: r.calls,
  paidCalls: r.paidCalls,
  revenue: r.revenue.toString(),
  operatorShare: r.operatorShare.toString(),
});

/** Analytics as JSON: amounts as atomic USDC strings. */
export function analyticsJson(a: Analytics, range: { from: number; to: number }) {
  return {
    from: new Date(range.from).toISOString().slice(0, 10),
    to: new Date(range.to - DAY_MS).toISOString().slice(0, 10),
    unit: 'atomic USDC (1e-6 USD); credits in micro-USD, the same unit',
    byDay: a.byDay.map(row),
    byTool: a.byTool.map(row),
    byRail: a.byRail.map(row),
    topCallers: a.byCaller.map(row),
    denials: a.denials,
    settlement: a.settlement,
    losses: { count: a.losses.count, amount: a.losses.amount.toString() },
  };
}

/**
 * RFC 4180 field: quoted when it holds a comma, quote or line break. A leading `=+-@`, tab or carriage
 * return (which spreadsheets skip before reading a formula) is defused: tool names are the upstream's.
 *
 * @example field('\t=HYPERLINK("https://evil.example")') // `"'\t=HYPERLINK(""https://evil.example"")"`
 */
const field = (value: string | number) => {
  let s = String(value);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
};

/** Analytics as one CSV table: `section,key,calls,paid_calls,revenue,operator_share,count`. */
export function analyticsCsv(a: Analytics): string {
  const lines = [['section', 'key', 'calls', 'paid_calls', 'revenue', 'operator_share', 'count']];
  const usage = (section: string, rows: UsageRow[]) => {
    for (const r of rows)
      lines.push([section, r.key, String(r.calls), String(r.paidCalls), r.revenue.toString(), r.operatorShare.toString(), '']);
  };
  usage('day', a.byDay);
  usage('tool', a.byTool);
  usage('rail', a.byRail);
  usage('caller', a.byCaller);
  for (const d of a.denials) lines.push(['denial', d.reason, '', '', '', '', String(d.count)]);
  lines.push(['loss', 'deferred', String(a.losses.count), '', `-${a.losses.amount}`, '', '']);
  return `${lines.map((l) => l.map(field).join(',')).join('\r\n')}\r\n`;
}
