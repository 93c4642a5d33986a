import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const SRC = fileURLToPath(new URL('../../src/', import.meta.url));

/** One import between two files of src/, as paths relative to src/ (`rails/credits/credits.ts -> errors.ts`). */
type Edge = { from: string; to: string };

/** Every relative import (static, re-export or dynamic) of every .ts file under src/. */
function imports(): Edge[] {
  const edges: Edge[] = [];
  const files = readdirSync(SRC, { recursive: true, encoding: 'utf8' }).filter((file) => file.endsWith('.ts'));
  for (const file of files.map((f) => f.split(path.sep).join('/'))) {
    const text = readFileSync(path.join(SRC, file), 'utf8');
    for (const [, specifier] of text.matchAll(/(?:\bfrom|\bimport)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)) {
      const to = path.posix.normalize(path.posix.join(path.posix.dirname(file), specifier!)).replace(/\.js$/, '.ts');
      edges.push({ from: file, to });
    }
  }
  return edges;
}

/** The top-level folder of src/ a file is in (`rails` for `rails/credits/credits.ts`). */
const layer = (file: string) => file.split('/')[0]!;

/** The rules: which layers a layer must not import. */
const rules: { name: string; applies: (from: string) => boolean; forbidden: string[] }[] = [
  { name: 'only cli/ and app/ read config/', applies: (from) => !['cli', 'app', 'config'].includes(from), forbidden: ['config'] },
  { name: 'only http/, app/ and cli/ import http/', applies: (from) => !['http', 'app', 'cli'].includes(from), forbidden: ['http'] },
  {
    name: 'chain/ imports no gateway/, http/, rails/, operators/ or config/',
    applies: (from) => from === 'chain',
    forbidden: ['gateway', 'http', 'rails', 'operators', 'config'],
  },
  { name: 'store/ imports no http/ or gateway/', applies: (from) => from === 'store', forbidden: ['http', 'gateway'] },
];

/**
 * Known violations, each to go when its cause does; any other violation fails, and so does an
 * entry that no longer occurs (take it off the list).
 */
const allowed = new Set([
  // http/caller (the caller's address and credentials), http/metrics and http/body-limit, used below the edge.
  'gateway/gateway.ts -> http/caller.ts',
  'gateway/gateway.ts -> http/metrics.ts',
  'gateway/gateway.ts -> http/body-limit.ts',
  'rails/rail.ts -> http/metrics.ts',
  'rails/credits/api-keys.ts -> http/caller.ts',
  'oauth/resource-server.ts -> http/caller.ts',
  'upstream/stdio-bridge.ts -> http/caller.ts',
  // A local listener for the demo upstream and the stdio bridge.
  'demo/server.ts -> http/listen.ts',
  'upstream/stdio-bridge.ts -> http/listen.ts',
]);

describe('layers point down only (src/ import paths)', () => {
  const edges = imports();
  const violations = [
    ...new Set(
      edges
        .filter(({ from, to }) => rules.some((rule) => rule.applies(layer(from)) && rule.forbidden.includes(layer(to))))
        .map(({ from, to }) => `${from} -> ${to}`),
    ),
  ].sort();

  test('the import scan sees the code (a sample of edges every build has)', () => {
    const seen = new Set(edges.map(({ from, to }) => `${from} -> ${to}`));
    assert.ok(seen.has('app/gateway-server.ts -> gateway/gateway.ts'), 'app/gateway-server.ts imports gateway/gateway.ts');
    assert.ok(edges.length > 300, `${edges.length} imports`);
  });

  test('no import breaks a layer rule except the known ones listed', () => {
    const unexpected = violations.filter((edge) => !allowed.has(edge));
    const explain = (edge: string) => {
      const [from, to] = edge.split(' -> ') as [string, string];
      return `${edge} (${rules.find((r) => r.applies(layer(from)) && r.forbidden.includes(layer(to)))!.name})`;
    };
    assert.deepEqual(unexpected.map(explain), []);
  });

  test('every listed exception still occurs (one that is gone comes off the list)', () => {
    assert.deepEqual(
      [...allowed].filter((edge) => !violations.includes(edge)),
      [],
    );
  });
});
