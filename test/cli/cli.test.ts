import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { startSandbox } from '../../src/chain/sandbox/sandbox.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { turnpike } from '../helpers/cli.js';
import { eventually } from '../helpers/served.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('turnpike CLI (built)', () => {
  test('--help for the program and for each command', async () => {
    const top = await turnpike(['--help']).done;
    assert.equal(top.code, 0);
    assert.match(top.stdout, /chain\s+run the local Base sandbox/);
    const chain = await turnpike(['chain', '--help']).done;
    assert.equal(chain.code, 0);
    assert.match(chain.stdout, /--port N/);
  });

  test('a bad flag exits 2 with every problem by flag name, no stack trace', async () => {
    const result = await turnpike(['chain', '--port=abc', '--payers=-1']).done;
    assert.equal(result.code, 2);
    assert.match(result.stderr, /--port: .*got "abc"/);
    assert.match(result.stderr, /--payers: .*got "-1"/);
    assert.doesNotMatch(result.stderr, /\n\s+at /);
    assert.equal((await turnpike(['nonsense']).done).code, 2);
  });

  test('a bad config file exits 2 with one line per field and its source', async () => {
    const file = path.join(dir, 'bad.yaml');
    writeFileSync(file, 'network: ethereum\nhttp:\n  port: 99999\n');
    const result = await turnpike(['config', '--config', file], { TURNPIKE_LOG_LEVEL: 'loud' }).done;
    assert.equal(result.code, 2);
    assert.match(result.stderr, /invalid configuration \(3 problems\)/);
    assert.match(result.stderr, /network .* \[file .*bad\.yaml\]/);
    assert.match(result.stderr, /log\.level .* \[env TURNPIKE_LOG_LEVEL\]/);
    assert.doesNotMatch(result.stderr, /\n\s+at /);
  });

  test('config prints a stdio server’s command with the values of its leading NAME=value credentials redacted', async () => {
    const file = path.join(dir, 'stdio.yaml');
    writeFileSync(
      file,
      'servers:\n  - slug: files\n    stdio: GITHUB_TOKEN=ghp_secret123 API_KEY=k-456 npx -y some-mcp-server ./docs\n    payTo: "0x00000000000000000000000000000000000000aa"\n    price: "0.01"\n',
    );
    const result = await turnpike(['config', '--config', file]).done;
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /"stdio": "GITHUB_TOKEN=\[redacted\] API_KEY=\[redacted\] npx -y some-mcp-server \.\/docs"/);
    assert.doesNotMatch(result.stdout, /ghp_secret123|k-456/);
  });

  test('config --variables prints three columns that never run together, one line per setting', async () => {
    const result = await turnpike(['config', '--variables']).done;
    assert.equal(result.code, 0);
    const lines = result.stdout.trimEnd().split('\n');
    assert.ok(lines.length > 20);
    for (const line of lines) assert.match(line, /^TURNPIKE_[A-Z0-9_]+ {2,}[A-Za-z0-9.[\]]+ {2,}\S/, line);
    assert.ok(lines.some((line) => line.startsWith('TURNPIKE_STDIO_MAX_SESSIONS_PER_CLIENT ')));
  });

  test('chain prints the sandbox and, on SIGINT, stops leaving no anvil behind', async () => {
    const run = turnpike(['chain', '--payers', '2', '--json']);
    while (!run.stdout().includes('\n')) await new Promise((r) => setTimeout(r, 20));
    const info = JSON.parse(run.stdout());
    assert.equal(info.usdc, '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913');
    assert.equal(info.payers.length, 2);
    const res = await fetch(info.rpcUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] }),
    });
    assert.equal(((await res.json()) as { result: string }).result, '0x2105');
    const port = new URL(info.rpcUrl).port;
    run.child.kill('SIGINT');
    assert.equal((await run.done).code, 0);
    await assert.rejects(fetch(info.rpcUrl, { method: 'POST', body: '{}' }), `anvil still answers on port ${port}`);
  });

  test('chain killed with SIGKILL still takes its anvil down', async () => {
    const run = turnpike(['chain', '--payers', '1', '--json']);
    while (!run.stdout().includes('\n')) await new Promise((r) => setTimeout(r, 20));
    const info = JSON.parse(run.stdout());
    run.child.kill('SIGKILL');
    await run.done;
    for (const deadline = Date.now() + 10_000; Date.now() < deadline; ) {
      try {
        await fetch(info.rpcUrl, { method: 'POST', body: '{}' });
      } catch {
        return;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.fail('anvil kept running after its owner was killed');
  });

  test('facilitator serves /supported on the sandbox, prints its URL, wants a TURNPIKE_FACILITATOR_KEYS key on /verify, and stops on SIGINT', async () => {
    const key = 'resource-server-key-0123456789abcdef';
    const args = ['facilitator', '--port', '0', '--data-dir', path.join(dir, 'fac'), '--log-level', 'silent'];
    const run = turnpike(args, { TURNPIKE_FACILITATOR_KEYS: key });
    while (!/listening on (\S+)/.test(run.stdout())) await new Promise((r) => setTimeout(r, 20));
    const url = /listening on (\S+)/.exec(run.stdout())![1]!;
    const rpcUrl = /rpc\s+(\S+)/.exec(run.stdout())![1]!;
    const supported = (await (await fetch(`${url}/supported`)).json()) as { kinds: { network: string }[] };
    assert.deepEqual(
      supported.kinds.map((k) => k.network),
      ['eip155:8453', 'base'],
    );
    const unkeyed = await fetch(`${url}/verify`, { method: 'POST', body: 'nope' });
    const keyed = await fetch(`${url}/verify`, { method: 'POST', body: 'nope', headers: { authorization: `Bearer ${key}` } });
    run.child.kill('SIGINT');
    assert.equal((await run.done).code, 0);
    assert.deepEqual([unkeyed.status, keyed.status], [401, 400], 'without a key nothing is read; with one the body is judged');
    assert.match(run.stdout(), /api keys\s+1 \(TURNPIKE_FACILITATOR_KEYS\)/);
    await assert.rejects(fetch(rpcUrl, { method: 'POST', body: '{}' }), 'the sandbox stopped with it');
  });

  test('facilitator: an unreachable node is named (exit 1)', async () => {
    const result = await turnpike(['facilitator', '--network', 'base', '--rpc-url', 'http://127.0.0.1:9', '--port', '0']).done;
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /cannot reach the chain at http:\/\/127\.0\.0\.1:9/);
  });

  test('facilitator: any node with chain id 8453 is Base, and then the relayer key is required (exit 2)', async () => {
    const sandbox = await startSandbox({ payers: 0 });
    try {
      const result = await turnpike(['facilitator', '--network', 'base', '--rpc-url', sandbox.rpcUrl, '--port', '0']).done;
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, /set TURNPIKE_RELAYER_KEY \(or TURNPIKE_RELAYER_KEY_FILE\) to settle on base/);
    } finally {
      await sandbox.stop();
    }
  });

  test('wrap in facilitator.mode remote settles nothing itself: on Base it starts without a relayer key, naming the remote', async () => {
    const sandbox = await startSandbox({ payers: 0 });
    const payTo = '0x000000000000000000000000000000000000dEaD';
    const chain = ['--network', 'base', '--rpc-url', sandbox.rpcUrl];
    const args = ['wrap', '--upstream', 'http://127.0.0.1:9/mcp', '--pay-to', payTo, ...chain, '--port', '0'];
    const data = ['--data-dir', path.join(dir, 'remote-mode'), '--log-level', 'silent'];
    try {
      const noUrl = await turnpike([...args, ...data], { TURNPIKE_FACILITATOR_MODE: 'remote' }).done;
      assert.equal(noUrl.code, 2, noUrl.stderr);
      assert.match(noUrl.stderr, /facilitator\.url .*needs facilitator\.url/);
      const remote = { TURNPIKE_FACILITATOR_MODE: 'remote', TURNPIKE_FACILITATOR_URL: 'http://127.0.0.1:9/x402' };
      const run = turnpike([...args, ...data], remote);
      while (!/paying MCP endpoint at/.test(run.stdout())) {
        if (run.child.exitCode !== null) assert.fail(`wrap exited early: ${run.stdout()}${(await run.done).stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.match(run.stdout(), /facilitator {2}http:\/\/127\.0\.0\.1:9\/x402/);
      run.child.kill('SIGINT');
      assert.equal((await run.done).code, 0);
    } finally {
      await sandbox.stop();
    }
  });

  test('demo: an agent pays a demo MCP server through turnpike on the sandbox, then it keeps serving', async () => {
    const run = turnpike(['demo', '--port', '0', '--data-dir', path.join(dir, 'demo')]);
    while (!run.stdout().includes('Press Ctrl-C')) {
      if (run.child.exitCode !== null) assert.fail(`demo exited early:\n${run.stdout()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const out = run.stdout();
    assert.match(out, /hello \(free\) → Hello, agent!/);
    assert.match(out, /payment required: 0\.01 USDC/);
    assert.match(out, /receipt\s+settled in 0x[0-9a-f]{64} on eip155:8453/);
    assert.match(out, /payer\s+10000 USDC → 9999\.99 USDC/);
    assert.match(out, /payee\s+0 USDC → 0\.01 USDC/);
    const url = /Point your MCP client at (\S+)/.exec(out)![1]!;
    const pricing = await fetch(new URL('/pricing', url));
    assert.equal(pricing.status, 200);
    run.child.kill('SIGINT');
    assert.equal((await run.done).code, 0);
  });

  test('serve: several MCP servers from one config file, each under /mcp/<slug> with its own prices', async () => {
    const fs = path.join(
      path.dirname(createRequire(import.meta.url).resolve('@modelcontextprotocol/server-filesystem/package.json')),
      'dist/index.js',
    );
    const docs = mkdtempSync(path.join(dir, 'docs-'));
    writeFileSync(path.join(docs, 'a.txt'), 'alpha');
    const stdio = `${JSON.stringify(process.execPath)} ${JSON.stringify(fs)} ${JSON.stringify(docs)}`;
    const file = path.join(dir, 'serve.yaml');
    writeFileSync(
      file,
      [
        'http: { port: 0 }',
        `dataDir: ${JSON.stringify(path.join(dir, 'serve'))}`,
        'log: { level: silent }',
        'servers:',
        `  - { slug: docs, stdio: ${JSON.stringify(stdio)}, payTo: "0x00000000000000000000000000000000000000bb", price: "0.02", free: [list_allowed_directories] }`,
        `  - { slug: notes, stdio: ${JSON.stringify(stdio)}, payTo: "0x00000000000000000000000000000000000000cc", plan: { type: tiered, tiers: [{ upTo: 3, price: "0" }, { price: "0.5" }] } }`,
      ].join('\n'),
    );
    const run = turnpike(['serve', '--config', file]);
    while (!run.stdout().includes('discovery')) {
      if (run.child.exitCode !== null) assert.fail(`serve exited early: ${run.stdout()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const base = /listening on (\S+)/.exec(run.stdout())![1]!;
    type Discovery = {
      endpoints: {
        url: string;
        rails: string[];
        x402: { payTo: string };
        credits: { topup: Record<string, unknown> };
        tools: { name: string; usd: string }[];
        plan?: { type: string };
      }[];
    };
    // A first read waits 3 s at most for the tools; starting the stdio children can take longer on a loaded machine.
    const doc = await eventually(
      async () => (await (await fetch(`${base}/.well-known/mcp-payment`)).json()) as Discovery,
      (d) => d.endpoints.every((e) => e.tools.length > 0),
      'both servers’ tools listed',
    );
    assert.deepEqual(doc.endpoints[0]!.rails, ['x402', 'credits']);
    // Without Stripe secrets only the USDC top-up is offered, and checkout says why it is off.
    assert.deepEqual(Object.keys(doc.endpoints[0]!.credits.topup), ['x402']);
    const checkout = await fetch(`${base}/credits/checkout`, { method: 'POST', headers: { authorization: 'Bearer tp_unknown' } });
    assert.equal(checkout.status, 401);
    assert.deepEqual(
      doc.endpoints.map((e) => e.url),
      [`${base}/mcp/docs`, `${base}/mcp/notes`],
    );
    const price = (i: number, tool: string) => doc.endpoints[i]!.tools.find((t) => t.name === tool)?.usd;
    assert.deepEqual([price(0, 'read_text_file'), price(0, 'list_allowed_directories'), price(1, 'read_text_file')], ['0.02', '0', '0.5']);
    assert.equal(doc.endpoints[1]!.x402.payTo.toLowerCase(), '0x00000000000000000000000000000000000000cc');
    assert.equal(doc.endpoints[1]!.plan?.type, 'tiered', 'a config-file server can have any plan the operator API takes');
    run.child.kill('SIGINT');
    assert.equal((await run.done).code, 0);
  });

  test('serve: a config without servers, or with a bad one, exits 2 naming the field', async () => {
    const file = path.join(dir, 'bad-serve.yaml');
    writeFileSync(
      file,
      'servers:\n  - { slug: "Bad Slug", payTo: "0x12", price: "0.0000001", plan: { type: tiered, tiers: [{ upTo: 5, price: "0" }] } }\n',
    );
    const result = await turnpike(['serve', '--config', file]).done;
    assert.equal(result.code, 2);
    assert.match(result.stderr, /servers\.0\.slug/);
    assert.match(result.stderr, /servers\.0\.payTo/);
    assert.match(result.stderr, /servers\.0\.price .*6 decimals/);
    assert.match(result.stderr, /servers\.0\.plan\.tiers\.0\.upTo .*last tier/);
  });

  test('serve: with operators enabled, an empty servers list is a platform instance; without, it exits 2 naming servers', async () => {
    const file = path.join(dir, 'platform.yaml');
    const lines = ['http: { port: 0 }', `dataDir: ${JSON.stringify(path.join(dir, 'platform'))}`, 'log: { level: silent }'];
    writeFileSync(file, [...lines, 'servers: []'].join('\n'));
    const refused = await turnpike(['serve', '--config', file]).done;
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /servers +no MCP servers to serve; .*enable operators \(TURNPIKE_ADMIN_KEY/);

    const upstream = await startCounterUpstream();
    const adminKey = 'admin-key-of-a-platform-instance-0123456789';
    writeFileSync(file, [...lines, 'operators: { allowPrivateUpstreams: true }'].join('\n'));
    const run = turnpike(['serve', '--config', file], { TURNPIKE_ADMIN_KEY: adminKey });
    try {
      while (!run.stdout().includes('discovery')) {
        if (run.child.exitCode !== null) assert.fail(`serve exited early: ${run.stdout()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const base = /listening on (\S+)/.exec(run.stdout())![1]!;
      assert.match(run.stdout(), /a platform instance: operators register servers at \S+\/operator\/servers/);
      const json = { 'content-type': 'application/json' };
      const post = (path: string, key: string, body: unknown) =>
        fetch(`${base}${path}`, { method: 'POST', headers: { ...json, authorization: `Bearer ${key}` }, body: JSON.stringify(body) });
      const operator = (await (await post('/admin/operators', adminKey, { email: 'a@example.com', name: 'A' })).json()) as { key: string };
      const payTo = '0x00000000000000000000000000000000000000bb';
      const plan = { type: 'per_call', default: '0.01' };
      const server = { slug: 'counter', name: 'Counter', upstream: `${upstream.url}/mcp`, payTo, plan };
      const registered = await post('/operator/servers', operator.key, server);
      assert.equal(registered.status, 201, await registered.clone().text());
      const doc = (await (await fetch(`${base}/.well-known/mcp-payment`)).json()) as { endpoints: { url: string }[] };
      assert.deepEqual(
        doc.endpoints.map((e) => e.url),
        [`${base}/mcp/counter`],
      );
    } finally {
      run.child.kill('SIGINT');
      await upstream.close();
    }
    assert.equal((await run.done).code, 0);
  });

  test('keys: create, top up (once per idempotency key), suspend, and clear errors for bad flags', async () => {
    const data = ['--data-dir', path.join(dir, 'keys')];
    const created = await turnpike(['keys', '--create', 'agent-1', '--usd', '2.50', '--tool', 'search', ...data]).done;
    assert.equal(created.code, 0, created.stderr);
    const key = JSON.parse(created.stdout) as { id: string; key: string; balance: string; scope: unknown };
    assert.match(key.key, /^tp_/);
    assert.equal(key.balance, '2500000');
    assert.deepEqual(key.scope, { tools: ['search'] });
    for (let i = 0; i < 2; i++) {
      const topped = await turnpike(['keys', '--topup', key.id, '--usd', '1', '--idempotency-key', 'invoice-7', ...data]).done;
      assert.equal(topped.code, 0, topped.stderr);
      assert.equal((JSON.parse(topped.stdout) as { applied: boolean }).applied, i === 0);
    }
    const suspended = JSON.parse((await turnpike(['keys', '--suspend', key.id, ...data]).done).stdout) as {
      status: string;
      balance: string;
    };
    assert.deepEqual([suspended.status, suspended.balance], ['suspended', '3500000']);
    const listed = await turnpike(['keys', '--list', ...data]).done;
    assert.ok(!listed.stdout.includes(key.key));
    const bad = await turnpike(['keys', '--create', 'x', '--usd', '1.0000001', ...data]).done;
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--usd: .*6 decimals/);
    const two = await turnpike(['keys', '--list', '--revoke', key.id, ...data]).done;
    assert.equal(two.code, 2);
    const unknown = await turnpike(['keys', '--show', 'key_nope', ...data]).done;
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no API key key_nope/);
  });

  test('a second serving process on the same SQLite data refuses to share its relayer key', { timeout: 120_000 }, async () => {
    const hang = http.createServer(() => {});
    await new Promise<void>((resolve) => hang.listen(0, '127.0.0.1', resolve));
    const upstream = `http://127.0.0.1:${(hang.address() as { port: number }).port}/mcp`;
    const data = ['--data-dir', path.join(dir, 'shared-data')];
    const first = turnpike(['wrap', '--upstream', upstream, '--port', '0', '--log-level', 'silent', ...data]);
    try {
      while (!/paying MCP endpoint at/.test(first.stdout())) {
        if (first.child.exitCode !== null) assert.fail(`wrap exited early: ${first.stdout()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const second = await turnpike(['wrap', '--upstream', upstream, '--port', '0', '--log-level', 'silent', ...data]).done;
      assert.notEqual(second.code, 0);
      assert.match(second.stderr + second.stdout, /relayer 0x[0-9a-fA-F]{40} is sending for another turnpike instance on this store/);
    } finally {
      first.child.kill('SIGINT');
      await first.done;
      hang.close();
    }
  });

  test('wrap killed in the middle of a credits-paid call: after the restart the debit is refunded', { timeout: 120_000 }, async () => {
    const data = ['--data-dir', path.join(dir, 'cutoff')];
    const created = JSON.parse((await turnpike(['keys', '--create', 'agent', '--usd', '1', ...data]).done).stdout) as {
      id: string;
      key: string;
    };
    // An upstream that never answers: the call is under way when turnpike dies.
    let forwarded = false;
    const hang = http.createServer((req) => {
      let body = '';
      req.on('data', (chunk) => (body += chunk));
      req.on('end', () => (forwarded ||= body.includes('"tools/call"')));
    });
    await new Promise<void>((resolve) => hang.listen(0, '127.0.0.1', resolve));
    const upstream = `http://127.0.0.1:${(hang.address() as { port: number }).port}/mcp`;
    // A call may run 4 s; a debit open for 6 s (the timeout and a margin) was cut off.
    const wrap = () =>
      turnpike(['wrap', '--upstream', upstream, '--upstream-timeout', '4', '--port', '0', '--log-level', 'silent', ...data]);
    const listening = async (run: ReturnType<typeof turnpike>) => {
      const ready = /paying MCP endpoint at (\S+)\/mcp /;
      while (!ready.test(run.stdout())) {
        if (run.child.exitCode !== null) assert.fail(`wrap exited early: ${run.stdout()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      return ready.exec(run.stdout())![1]!;
    };
    const balance = async () =>
      (JSON.parse((await turnpike(['keys', '--show', created.id, ...data]).done).stdout) as { balance: string }).balance;
    try {
      const first = wrap();
      const base = await listening(first);
      const call = fetch(`${base}/mcp`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${created.key}`,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'anything', arguments: {} } }),
      }).catch(() => undefined);
      // Forwarded, so debited (the debit is taken before the call leaves), however slowly on a loaded machine.
      for (const deadline = Date.now() + 15_000; !forwarded; await new Promise((r) => setTimeout(r, 50)))
        if (Date.now() > deadline) assert.fail('the call never reached the upstream');
      first.child.kill('SIGKILL');
      await first.done;
      await call;
      assert.equal(await balance(), '990000');
      const second = wrap();
      await listening(second);
      const deadline = Date.now() + 15_000;
      while ((await balance()) !== '1000000') {
        if (Date.now() > deadline) assert.fail('the cut-off debit was not refunded');
        await new Promise((r) => setTimeout(r, 200));
      }
      const ledger = JSON.parse((await turnpike(['keys', '--ledger', created.id, ...data]).done).stdout) as {
        entries: { kind: string; reason: string }[];
      };
      assert.equal(ledger.entries[0]!.kind, 'refund');
      assert.match(ledger.entries[0]!.reason, /cut off/);
      second.child.kill('SIGINT');
      await second.done;
    } finally {
      hang.closeAllConnections();
      hang.close();
    }
  });
});
