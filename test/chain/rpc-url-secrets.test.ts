import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { connectChain } from '../../src/chain/connect.js';
import { type Sandbox, startSandbox } from '../../src/chain/sandbox/sandbox.js';
import { configCommand } from '../../src/cli/commands/config.js';
import { loadConfig } from '../../src/config/load.js';
import { healthRoutes } from '../../src/http/health.js';
import { createLogger } from '../../src/log/logger.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { UpstreamError, send } from '../../src/upstream/upstream.js';

/** What a hosted node's URL carries: a key in the path, a key in the query, a password in the userinfo. */
const PATH_KEY = 'Yx3kP0aQ9zT2bV7nR4mW8cL1sEcReTpK';
const QUERY_KEY = 'q9Z8y7X6w5V4u3T2s1R0';
const PASSWORD = 'hunter2-Pa55word';
const SECRETS = [PATH_KEY, QUERY_KEY, PASSWORD, encodeURIComponent(PASSWORD), Buffer.from(`alice:${PASSWORD}`).toString('base64')];

const leaked = (text: string) => SECRETS.filter((secret) => text.includes(secret));

/** Everything an error says: its message, its own fields and its causes'. */
function everything(error: unknown): string {
  const parts: string[] = [];
  for (let e = error as (Error & Record<string, unknown>) | undefined; e; e = e.cause as typeof e) {
    parts.push(
      String(e.message),
      String(e.stack),
      JSON.stringify(e, (_k, v) => (typeof v === 'bigint' ? String(v) : v)),
    );
  }
  return parts.join('\n');
}

let sandbox: Sandbox;
let node: http.Server;
let nodeUrl: string;
/** The hosted node stops answering (503) while true. */
let down = false;
const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-rpc-secrets-'));

before(async () => {
  sandbox = await startSandbox();
  // A hosted node in front of the sandbox: answers only requests with every credential of its URL.
  node = http.createServer(async (req, res) => {
    const authorized =
      req.url === `/v2/${PATH_KEY}?apikey=${QUERY_KEY}&chain=base` &&
      req.headers.authorization === `Basic ${Buffer.from(`alice:${PASSWORD}`).toString('base64')}`;
    if (!authorized) return void res.writeHead(401).end('unauthorized');
    if (down) return void res.writeHead(503).end('unavailable');
    let body = '';
    for await (const chunk of req) body += chunk;
    const answer = await fetch(sandbox.rpcUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    res.writeHead(answer.status, { 'content-type': 'application/json' }).end(await answer.text());
  });
  await new Promise<void>((resolve) => node.listen(0, '127.0.0.1', resolve));
  const { port } = node.address() as AddressInfo;
  nodeUrl = `http://alice:${PASSWORD}@127.0.0.1:${port}/v2/${PATH_KEY}?apikey=${QUERY_KEY}&chain=base`;
});
after(async () => {
  await new Promise((resolve) => node.close(resolve));
  await sandbox.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('an RPC URL with an API key in it is a secret', () => {
  test('a failing RPC call leaves no key in the log, the /health answer or the connection error, though the node gets every credential', async () => {
    down = false;
    const chain = await connectChain({ network: 'local', rpcUrl: nodeUrl, relayerKeys: [] });
    assert.ok((await chain.client.getBlockNumber({ cacheTime: 0 })) >= 0n, 'the node answers: the real URL and credentials reach it');
    assert.deepEqual(leaked(chain.shownRpcUrl), []);
    assert.match(chain.shownRpcUrl, /\/v2\/\[redacted\]\?apikey=\[redacted\]&chain=base$/);

    down = true;
    const failure = await chain.client.getBlockNumber({ cacheTime: 0 }).then(
      () => assert.fail('the node is down'),
      (error: unknown) => error,
    );
    assert.match((failure as Error).message, /HTTP request failed/);
    assert.deepEqual(leaked(everything(failure)), [], 'the error, its fields and causes');

    const lines = new PassThrough();
    let logged = '';
    lines.on('data', (chunk) => (logged += chunk));
    createLogger({ level: 'info', format: 'json' }, lines).error({ err: failure }, 'chain read failed');
    assert.match(logged, /HTTP request failed/);
    assert.deepEqual(leaked(logged), [], 'the log line');

    const store = await openSqliteStore({ path: path.join(dir, 'health.db') });
    const health = await healthRoutes({ client: chain.client, store }).request('/health');
    const body = await health.text();
    await store.close();
    assert.equal(health.status, 503);
    assert.match(body, /HTTP request failed/);
    assert.deepEqual(leaked(body), [], 'the /health answer');

    const refused = await connectChain({ network: 'local', rpcUrl: nodeUrl, relayerKeys: [] }).then(
      () => assert.fail('the node is down'),
      (error: unknown) => error,
    );
    assert.match((refused as Error).message, /cannot reach the chain at http:\/\/\[redacted\]@127\.0\.0\.1:\d+\/v2\/\[redacted\]/);
    assert.deepEqual(leaked(everything(refused)), [], 'the connection error (printed by every serving command)');
    await chain.close();
  });

  test('turnpike config prints the RPC URL without its key, and so does the problem with a bad one', async () => {
    const file = path.join(dir, 'config.yaml');
    writeFileSync(file, `rpcUrl: ${JSON.stringify(nodeUrl)}\n`);
    let printed = '';
    const stdout = new PassThrough().on('data', (chunk) => (printed += chunk));
    await configCommand.run({ config: file, variables: false }, { stdout, stderr: new PassThrough() });
    assert.match(printed, /"rpcUrl": "http:\/\/\[redacted\]@127\.0\.0\.1:\d+\/v2\/\[redacted\]\?apikey=\[redacted\]&chain=base"/);
    assert.deepEqual(leaked(printed), []);

    const bad = `ftp://node.example/v2/${PATH_KEY}?apikey=${QUERY_KEY}`;
    assert.throws(
      () => loadConfig({ env: {}, overrides: { rpcUrl: bad } }),
      (error: Error & { format(): string }) => /rpcUrl/.test(error.format()) && leaked(`${error.message}\n${error.format()}`).length === 0,
    );
  });

  test('turnpike config prints no credential of any URL: the store’s password, an upstream’s key, a webhook’s token; nor does a bad one’s problem', async () => {
    const file = path.join(dir, 'urls.yaml');
    writeFileSync(
      file,
      [
        `store: { url: ${JSON.stringify(`postgres://alice:${PASSWORD}@db.example:5432/turnpike`)} }`,
        'servers:',
        `  - { slug: search, upstream: ${JSON.stringify(`https://mcp.example.com/mcp?api_key=${QUERY_KEY}`)}, payTo: "0x00000000000000000000000000000000000000aa" }`,
        `events: { endpoints: [{ url: ${JSON.stringify(`https://hooks.example.com/services/T0/B0/${PATH_KEY}`)}, secretFromEnv: HOOK_SECRET }] }`,
      ].join('\n'),
    );
    let printed = '';
    const stdout = new PassThrough().on('data', (chunk) => (printed += chunk));
    await configCommand.run({ config: file, variables: false }, { stdout, stderr: new PassThrough() });
    assert.match(printed, /"url": "postgres:\/\/\[redacted\]@db\.example:5432\/turnpike"/);
    assert.match(printed, /"upstream": "https:\/\/mcp\.example\.com\/mcp\?api_key=\[redacted\]"/);
    assert.match(printed, /"url": "https:\/\/hooks\.example\.com\/services\/T0\/B0\/\[redacted\]"/);
    assert.match(printed, /"payTo": "0x0{38}aa"/, 'what is no URL is printed as it is');
    assert.deepEqual(leaked(printed), []);

    const typo = `postgress://alice:${PASSWORD}@db.example:5432/turnpike`;
    assert.throws(
      () => loadConfig({ env: {}, overrides: { store: { url: typo } } }),
      (error: Error & { format(): string }) =>
        /store\.url/.test(error.format()) && leaked(`${error.message}\n${error.format()}`).length === 0,
    );
    const server = { slug: 'search', upstream: `https://mcp.example.com/mcp?api_key=${QUERY_KEY}`, stdio: 'npx some-server' };
    assert.throws(
      () => loadConfig({ env: {}, overrides: { servers: [{ ...server, payTo: '0x00000000000000000000000000000000000000aa' }] } }),
      (error: Error & { format(): string }) =>
        /exactly one of upstream and stdio/.test(error.format()) && leaked(`${error.message}\n${error.format()}`).length === 0,
      'a problem with a whole server shows its upstream without the key',
    );
  });

  test('an upstream that does not answer, with a token in its URL’s path, is named without it in the error logged and kept', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise((resolve) => closed.close(resolve));
    const upstream = { url: `http://127.0.0.1:${port}/api/mcp/s/${PATH_KEY}/mcp`, headers: {}, timeoutMs: 2_000 };
    const failure = await send(upstream, { method: 'POST', headers: {} }, new Uint8Array()).then(
      () => assert.fail('nothing listens there'),
      (error: unknown) => error as UpstreamError,
    );
    assert.ok(failure instanceof UpstreamError);
    assert.match(failure.message, /the MCP server at http:\/\/127\.0\.0\.1:\d+\/api\/mcp\/s\/\[redacted\]\/mcp did not answer/);
    assert.deepEqual(leaked(failure.message), []);
  });

  test('a remote facilitator URL with a password in it is refused by name, not shown: fetch would refuse it on every payment, naming it to the payer', () => {
    const url = `https://alice:${PASSWORD}@facilitator.example`;
    assert.throws(
      () => loadConfig({ env: {}, overrides: { facilitator: { mode: 'remote', url } } }),
      (error: Error & { format(): string }) =>
        /facilitator\.url\s.*TURNPIKE_REMOTE_FACILITATOR_KEY/.test(error.format()) &&
        leaked(`${error.message}\n${error.format()}`).length === 0,
    );
  });
});
