import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { turnpike } from '../helpers/cli.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-first-hour-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('the first hour with the CLI (built)', () => {
  test('a negative or missing flag value is named by its flag, never "argument is ambiguous"', async () => {
    const negative = await turnpike(['wrap', '--upstream', 'http://127.0.0.1:9/mcp', '--price', '-1']).done;
    assert.equal(negative.code, 2);
    assert.match(negative.stderr, /--price: .*\(got "-1"\)/);
    assert.doesNotMatch(negative.stderr, /ambiguous/);
    const missing = await turnpike(['wrap', '--price', '--upstream', 'http://127.0.0.1:9/mcp']).done;
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /--price: missing its value/);
  });

  test('a port in use is refused before the chain or the store is opened, naming the port and --port', async () => {
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const port = String((holder.address() as { port: number }).port);
    try {
      for (const args of [['wrap', '--upstream', 'http://127.0.0.1:9/mcp'], ['facilitator'], ['demo']]) {
        const dataDir = path.join(dir, `busy-${args[0]}`);
        const result = await turnpike([...args, '--port', port, '--data-dir', dataDir]).done;
        assert.equal(result.code, 2, result.stderr);
        const named = `port ${port} on 127\\.0\\.0\\.1 is in use by another process: choose another with --port N`;
        assert.match(result.stderr, new RegExp(named));
        assert.doesNotMatch(result.stdout + result.stderr, /unexpected error|migrat/i);
        assert.equal(existsSync(dataDir), false, `${args[0]}: no store was opened`);
      }
    } finally {
      holder.close();
    }
  });

  test('wrap: the printed facilitator URL answers GET with its routes; /health is degraded (200), the upstream unreachable; its key is shown nowhere', async () => {
    const data = ['--data-dir', path.join(dir, 'wrap'), '--log-level', 'silent'];
    const key = 'q9Z8y7X6w5V4u3T2s1R0';
    const run = turnpike(['wrap', '--upstream', `http://127.0.0.1:9/mcp?api_key=${key}`, '--port', '0', ...data]);
    try {
      while (!/facilitator\s+(\S+)/.test(run.stdout())) {
        if (run.child.exitCode !== null) assert.fail(`wrap exited early:\n${run.stdout()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const facilitator = /facilitator\s+(\S+)/.exec(run.stdout())![1]!;
      const index = await fetch(facilitator);
      assert.equal(index.status, 200);
      const { routes } = (await index.json()) as { routes: { method: string; url: string }[] };
      const expected = [`POST ${facilitator}/verify`, `POST ${facilitator}/settle`, `GET ${facilitator}/supported`];
      assert.deepEqual(
        routes.map((r) => `${r.method} ${r.url}`),
        expected,
      );
      assert.match(run.stdout(), /→ http:\/\/127\.0\.0\.1:9\/mcp\?api_key=\[redacted\]/);
      assert.ok(!run.stdout().includes(key), `the banner shows the upstream's key:\n${run.stdout()}`);
      const health = await fetch(facilitator.replace(/\/facilitator$/, '/health'));
      assert.equal(health.status, 200);
      const text = await health.text();
      assert.ok(!text.includes(key), text);
      const body = JSON.parse(text) as { status: string; upstreams: { default: { ok: boolean; error: string } } };
      assert.equal(body.status, 'degraded');
      assert.equal(body.upstreams.default.ok, false);
    } finally {
      run.child.kill('SIGINT');
      await run.done;
    }
  });

  test('serve: the banner shows a configured upstream without the key in its URL', async () => {
    const key = 'q9Z8y7X6w5V4u3T2s1R0';
    const file = path.join(dir, 'serve-key.yaml');
    writeFileSync(
      file,
      [
        'http: { port: 0 }',
        `dataDir: ${JSON.stringify(path.join(dir, 'serve-key'))}`,
        'log: { level: silent }',
        'servers:',
        `  - { slug: search, upstream: "http://127.0.0.1:9/mcp?api_key=${key}", payTo: "0x00000000000000000000000000000000000000aa" }`,
      ].join('\n'),
    );
    const run = turnpike(['serve', '--config', file]);
    try {
      while (!run.stdout().includes('discovery')) {
        if (run.child.exitCode !== null) assert.fail(`serve exited early:\n${run.stdout()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.match(run.stdout(), /\/mcp\/search {2}→ http:\/\/127\.0\.0\.1:9\/mcp\?api_key=\[redacted\]/);
      assert.ok(!run.stdout().includes(key), run.stdout());
    } finally {
      run.child.kill('SIGINT');
      await run.done;
    }
  });
});
