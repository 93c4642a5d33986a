import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, realpathSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { x402Client } from '@x402/core/client';
import type { PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import type { Facilitator } from '../../src/facilitator/facilitator.js';
import { x402Rail } from '../../src/rails/x402/rail.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { startStdioBridge } from '../../src/upstream/stdio-bridge.js';
import type { Listening } from '../../src/http/listen.js';
import { useSandbox } from '../helpers/chain.js';
import { listenGateway } from '../helpers/gateway.js';

const chain = useSandbox({ isolate: false });
const docs = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'turnpike-docs-')));
for (let i = 0; i < 50; i++) writeFileSync(path.join(docs, `note-${i}.txt`), `note number ${i}`);
const serverFilesystem = path.join(
  path.dirname(createRequire(import.meta.url).resolve('@modelcontextprotocol/server-filesystem/package.json')),
  'dist/index.js',
);

let bridge: Awaited<ReturnType<typeof startStdioBridge>>;
let gateway: Listening;
const filesystem = (dir: string) => `${JSON.stringify(process.execPath)} ${JSON.stringify(serverFilesystem)} ${JSON.stringify(dir)}`;

/** A paying gateway in front of `bridge`, telling it the caller's address as `turnpike serve` does. */
async function gatewayFor(stdio: { mcpUrl: string }, facilitator: Facilitator): Promise<Listening> {
  return listenGateway({
    upstream: { url: stdio.mcpUrl, headers: {}, timeoutMs: 10_000, tellCaller: true },
    plan: flatPlan(priceTableSchema.parse({ default: '0.01', tools: { read_multiple_files: '0.03' }, free: ['list_allowed_directories'] })),
    payTo: chain.sandbox.accounts.payees[1]!.address,
    rails: [x402Rail({ facilitator })],
    server: 'test',
  });
}

async function connect() {
  const client = new Client({ name: 'stdio-test', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(`${gateway.url}/mcp`)));
  return client;
}
const text = (r: unknown) => (r as { content: { text: string }[] }).content.map((c) => c.text).join('');

describe('stdio MCP servers behind the paying proxy (server-filesystem from npm)', () => {
  before(async () => {
    // Idle sessions are not what this describes: 50 clients paying at once take a minute or more on a loaded machine.
    bridge = await startStdioBridge(filesystem(docs), { maxSessions: 64, maxSessionsPerClient: 64, idleMs: 600_000 });
    gateway = await gatewayFor(bridge, (await chain.facilitator([3])).facilitator);
  });
  after(async () => {
    await gateway?.close();
    await bridge?.close();
  });

  test('a paid call to a stdio server: challenged, paid, answered, settled', async () => {
    const client = await connect();
    const { tools } = await client.listTools();
    assert.equal((tools.find((t) => t.name === 'read_multiple_files')?._meta?.['turnpike/price'] as { usd: string }).usd, '0.03');
    const args = { paths: [path.join(docs, 'note-1.txt'), path.join(docs, 'note-2.txt')] };
    const challenged = await client.callTool({ name: 'read_multiple_files', arguments: args });
    assert.equal(challenged.isError, true);
    // This tool declares an outputSchema, so the challenge comes as text only (the SDK would
    // validate structuredContent against the schema and fail).
    assert.equal(challenged.structuredContent, undefined);
    const required = JSON.parse(text(challenged)) as PaymentRequired;
    const payer = chain.sandbox.accounts.payers[4]!;
    const payment = await new x402Client().register('eip155:8453', new ExactEvmScheme(payer)).createPaymentPayload(required);
    const before = await chain.balanceOf(chain.sandbox.accounts.payees[1]!.address);
    const paid = await client.callTool({ name: 'read_multiple_files', arguments: args, _meta: { 'x402/payment': payment } });
    assert.match(text(paid), /note number 1/);
    assert.match(text(paid), /note number 2/);
    assert.equal((paid._meta?.['x402/payment-response'] as { success: boolean }).success, true);
    assert.equal(await chain.balanceOf(chain.sandbox.accounts.payees[1]!.address), before + 30_000n);
    await client.close();
  });

  test('50 concurrent clients, all using request id 1, each get their own answer and pay once each', async () => {
    const payee = chain.sandbox.accounts.payees[1]!.address;
    const before = await chain.balanceOf(payee);
    const clients = await Promise.all(Array.from({ length: 50 }, () => connect()));
    const answers = await Promise.all(
      clients.map(async (client, i) => {
        const args = { path: path.join(docs, `note-${i}.txt`) };
        const challenged = await client.callTool({ name: 'read_text_file', arguments: args });
        const required = JSON.parse(text(challenged)) as PaymentRequired;
        const payer = chain.sandbox.accounts.payers[i % chain.sandbox.accounts.payers.length]!;
        const payment = await new x402Client().register('eip155:8453', new ExactEvmScheme(payer)).createPaymentPayload(required);
        return client.callTool({ name: 'read_text_file', arguments: args, _meta: { 'x402/payment': payment } });
      }),
    );
    answers.forEach((answer, i) => {
      assert.equal(text(answer), `note number ${i}`, `client ${i} got someone else's answer`);
      assert.equal((answer._meta?.['x402/payment-response'] as { success: boolean }).success, true);
    });
    assert.equal(await chain.balanceOf(payee), before + 50n * 10_000n);
    await Promise.all(clients.map((c) => c.close()));
  });
});

const INITIALIZE = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'stdio-bounds-test', version: '1.0.0' } },
});
const MCP_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
const initialize = (url: string, headers: Record<string, string> = {}) =>
  fetch(url, { method: 'POST', headers: { ...MCP_HEADERS, ...headers }, body: INITIALIZE });

/** The stdio servers this process runs now for `dir`, counted by the kernel (`ps`), not by the bridge. */
function childrenServing(dir: string): number {
  const out = execFileSync('ps', ['-o', 'args=', '--ppid', String(process.pid)], { encoding: 'utf8' });
  return out.split('\n').filter((line) => line.includes(dir)).length;
}

describe('stdio sessions are bounded per caller and per instance, and end when idle', () => {
  const dir = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'turnpike-bounded-')));
  let facilitator: Facilitator;
  before(async () => {
    facilitator = (await chain.facilitator([3])).facilitator;
  });

  test('100 initialize calls from one address start at most maxSessionsPerClient children; the rest get 429 naming the limit', async () => {
    // No session may go idle meanwhile (it took 80 s under load): its freed slot would open a fifth.
    const bounded = await startStdioBridge(filesystem(dir), { maxSessions: 32, maxSessionsPerClient: 4, idleMs: 600_000 });
    const front = await gatewayFor(bounded, facilitator);
    let most = 0;
    const sampler = setInterval(() => (most = Math.max(most, childrenServing(dir))), 50);
    try {
      // Each names itself differently: a caller's own X-Turnpike-Caller is replaced by its socket address.
      const answers = await Promise.all(
        Array.from({ length: 100 }, async (_, i) => {
          const res = await initialize(`${front.url}/mcp`, { 'x-turnpike-caller': `10.0.0.${i}` });
          const { status, headers } = res;
          return { status, session: headers.get('mcp-session-id'), retryAfter: headers.get('retry-after'), body: await res.text() };
        }),
      );
      most = Math.max(most, childrenServing(dir));
      const opened = answers.filter((a) => a.status === 200);
      const refused = answers.filter((a) => a.status === 429);
      assert.equal(opened.length, 4, JSON.stringify(answers.filter((a) => a.status !== 429).map((a) => a.status)));
      assert.equal(refused.length, 96);
      assert.ok(most <= 4, `${most} children ran at once`);
      assert.equal(childrenServing(dir), 4);
      for (const r of refused) {
        assert.ok(Number(r.retryAfter) > 0);
        assert.match((JSON.parse(r.body) as { error: { message: string } }).error.message, /at most 4 \(stdio\.maxSessionsPerClient\)/);
      }
      // Ending a session frees its slot and its process.
      const ended = { 'mcp-session-id': opened[0]!.session!, 'mcp-protocol-version': '2025-06-18' };
      assert.equal((await fetch(`${front.url}/mcp`, { method: 'DELETE', headers: ended })).status, 200);
      await until(() => childrenServing(dir) === 3, 'the ended session’s child to exit');
      assert.equal((await initialize(`${front.url}/mcp`)).status, 200);
    } finally {
      clearInterval(sampler);
      await front.close();
      await bounded.close();
    }
    assert.equal(childrenServing(dir), 0);
  });

  test('concurrent initializes of a plain command (no shell syntax, so its program is looked up on disk first) still start at most maxSessionsPerClient children', async () => {
    // No quotes: the bridge checks the program on disk (an await) before each session; the slot must be taken before that await.
    const plain = `${process.execPath} ${serverFilesystem} ${dir}`;
    for (const part of [process.execPath, serverFilesystem, dir]) assert.doesNotMatch(part, /[\s|&;<>()$`\\"'*?[\]{}=~#!]/, part);
    const bounded = await startStdioBridge(plain, { maxSessions: 32, maxSessionsPerClient: 2, idleMs: 600_000 });
    try {
      const statuses = await Promise.all(
        Array.from({ length: 20 }, async () => {
          const res = await initialize(bounded.mcpUrl, { 'x-turnpike-caller': '203.0.113.9' });
          await res.body?.cancel();
          return res.status;
        }),
      );
      assert.equal(statuses.filter((s) => s === 200).length, 2, JSON.stringify(statuses));
      assert.equal(statuses.filter((s) => s === 429).length, 18);
      assert.ok(bounded.sessions() <= 2, `${bounded.sessions()} children run for one caller`);
    } finally {
      await bounded.close();
    }
  });

  test('an IPv6 caller rotating addresses within its /64 is one caller: at most maxSessionsPerClient children; another /64 is another caller', async () => {
    const bounded = await startStdioBridge(filesystem(dir), { maxSessions: 32, maxSessionsPerClient: 2, idleMs: 60_000 });
    try {
      const statuses = [];
      for (let i = 1; i <= 6; i++) {
        const res = await initialize(bounded.mcpUrl, { 'x-turnpike-caller': `2001:db8:1:2:${i.toString(16)}::${i}` });
        await res.body?.cancel();
        statuses.push(res.status);
      }
      assert.deepEqual(statuses, [200, 200, 429, 429, 429, 429]);
      const other = await initialize(bounded.mcpUrl, { 'x-turnpike-caller': '2001:db8:1:3::1' });
      await other.body?.cancel();
      assert.equal(other.status, 200, 'another /64');
      assert.equal(bounded.sessions(), 3);
      // An IPv4 address is one caller however it is written.
      const v4 = [];
      for (const caller of ['203.0.113.9', '::ffff:203.0.113.9', '::ffff:203.0.113.9']) {
        const res = await initialize(bounded.mcpUrl, { 'x-turnpike-caller': caller });
        await res.body?.cancel();
        v4.push(res.status);
      }
      assert.deepEqual(v4, [200, 200, 429]);
    } finally {
      await bounded.close();
    }
  });

  test('the instance bound holds across callers: past maxSessions a new caller gets 503 with Retry-After and no child', async () => {
    const bounded = await startStdioBridge(filesystem(dir), { maxSessions: 3, maxSessionsPerClient: 2, idleMs: 60_000 });
    try {
      const statuses = [];
      for (const caller of ['a', 'a', 'b', 'c']) statuses.push((await initialize(bounded.mcpUrl, { 'x-turnpike-caller': caller })).status);
      assert.deepEqual(statuses, [200, 200, 200, 503]);
      const refused = await initialize(bounded.mcpUrl, { 'x-turnpike-caller': 'd' });
      assert.equal(refused.status, 503);
      assert.ok(Number(refused.headers.get('retry-after')) > 0);
      assert.match(((await refused.json()) as { error: { message: string } }).error.message, /stdio\.maxSessions\b/);
      assert.equal(childrenServing(dir), 3);
    } finally {
      await bounded.close();
    }
  });

  test('a request without a session that is not initialize starts no child', async () => {
    const bounded = await startStdioBridge(filesystem(dir), { maxSessions: 3, maxSessionsPerClient: 2, idleMs: 60_000 });
    try {
      const res = await fetch(bounded.mcpUrl, {
        method: 'POST',
        headers: MCP_HEADERS,
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
      });
      assert.equal(res.status, 400);
      assert.match(((await res.json()) as { error: { message: string } }).error.message, /send initialize first/);
      assert.equal(bounded.sessions(), 0);
    } finally {
      await bounded.close();
    }
  });

  test('a session used within idleMs stays; an idle one is ended: its child exits and its session id is no longer served', async () => {
    // Used every 600 ms: a use may take seconds on a loaded machine, so idle means 5 s here.
    const bounded = await startStdioBridge(filesystem(dir), { maxSessions: 32, maxSessionsPerClient: 4, idleMs: 5_000 });
    const front = await gatewayFor(bounded, facilitator);
    try {
      const client = new Client({ name: 'stdio-idle-test', version: '1.0.0' });
      const transport = new StreamableHTTPClientTransport(new URL(`${front.url}/mcp`));
      await client.connect(transport);
      // Used within the idle time, it stays.
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 600));
        assert.ok((await client.listTools()).tools.length > 0);
      }
      assert.equal(childrenServing(dir), 1);
      await until(() => childrenServing(dir) === 0, 'the idle session’s child to exit');
      const stale = await fetch(`${front.url}/mcp`, {
        method: 'POST',
        headers: { ...MCP_HEADERS, 'mcp-session-id': transport.sessionId!, 'mcp-protocol-version': '2025-06-18' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/list' }),
      });
      assert.equal(stale.status, 404);
      assert.equal(bounded.sessions(), 0);
    } finally {
      await front.close();
      await bounded.close();
    }
  });

  test('a server that keeps sending notifications of its own does not keep an abandoned session alive', async () => {
    const chatty = fileURLToPath(new URL('../fixtures/chatty-stdio-server.mjs', import.meta.url));
    const bounded = await startStdioBridge(`${JSON.stringify(process.execPath)} ${JSON.stringify(chatty)}`, {
      maxSessions: 32,
      maxSessionsPerClient: 4,
      idleMs: 1_500,
    });
    try {
      const client = new Client({ name: 'stdio-abandoned', version: '1.0.0' });
      await client.connect(new StreamableHTTPClientTransport(new URL(bounded.mcpUrl)));
      // Answers still count as use: a call keeps its session.
      assert.equal(text(await client.callTool({ name: 'ping', arguments: {} })), 'pong');
      assert.equal(bounded.sessions(), 1);
      // Then the caller goes quiet while the child keeps talking (ten notifications a second).
      await until(() => bounded.sessions() === 0, 'the abandoned session to end');
      await client.close();
    } finally {
      await bounded.close();
    }
  });
});

async function until(ok: () => boolean, what: string) {
  const deadline = Date.now() + 20_000;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
