import { slugSchema } from '../pricing/slug.js';
import { z } from 'zod';
import type { Analytics, UsageRow } from '../store/operators.js';

const DAY_MS = 86_400_000;
const MAX_DAYS = 366;

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

const row = (r: UsageRow) => ({ key: r.key, calls: r.calls, paidCalls: r.paidCalls, revenue: r.revenue.toString(), operatorShare: r.operatorShare.toString() });

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
  };
}

/** RFC 4180 field: quoted when it holds a comma, quote or line break; a leading `=+-@` is defused for spreadsheets. */
const field = (value: string | number) => {
  let s = String(value);
  if (/^[=+\-@]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
};

/** Analytics as one CSV table: `section,key,calls,paid_calls,revenue,operator_share,count`. */
export function analyticsCsv(a: Analytics): string {
  const lines = [['section', 'key', 'calls', 'paid_calls', 'revenue', 'operator_share', 'count']];
  const usage = (section: string, rows: UsageRow[]) => {
    for (const r of rows) lines.push([section, r.key, String(r.calls), String(r.paidCalls), r.revenue.toString(), r.operatorShare.toString(), '']);
  };
  usage('day', a.byDay);
  usage('tool', a.byTool);
  usage('rail', a.byRail);
  usage('caller', a.byCaller);
  for (const d of a.denials) lines.push(['denial', d.reason, '', '', '', '', String(d.count)]);
  return `${lines.map((l) => l.map(field).join(',')).join('\r\n')}\r\n`;
}
