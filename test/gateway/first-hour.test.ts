import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import { Hono } from 'hono';
import { pino } from 'pino';
import { flatPlan } from '../../src/pricing/plans.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import { startStdioBridge } from '../../src/upstream/stdio-bridge.js';
import { toolsLookups } from '../../src/upstream/upstream-tools.js';
import { listen } from '../../src/http/listen.js';
import { createPublicClient, http } from 'viem';
import { networks } from '../../src/chain/networks.js';
import { discoveryRoutes } from '../../src/http/discovery.js';
import { healthRoutes } from '../../src/http/health.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { useSandbox } from '../helpers/chain.js';
import { listenGateway } from '../helpers/gateway.js';

const limits = { maxSessions: 4, maxSessionsPerClient: 4, idleMs: 60_000 };

/** A logger whose lines are kept, to see what an operator would read. */
function capturedLogger() {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({ write: (chunk, _, done) => (lines.push(JSON.parse(String(chunk))), done()) });
  return { logger: pino({ level: 'info' }, sink), lines };
}

const initializeParams = { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } };
const initialize = (url: string) =>
  fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'initialize', params: initializeParams }),
    signal: AbortSignal.timeout(10_000),
  });

describe('a stdio MCP server that cannot start', () => {
  test('a missing program: logged at start, initialize answered with a JSON-RPC error naming it and ENOENT, no child', async () => {
    const { logger, lines } = capturedLogger();
    const bridge = await startStdioBridge('/no/such/binary --token secret-value', limits, { logger });
    try {
      assert.match(String(lines[0]?.msg), /program "\/no\/such\/binary" cannot start: ENOENT: no such file or directory/);
      const res = await initialize(bridge.mcpUrl);
      assert.equal(res.status, 502);
      const body = (await res.json()) as { id: number; error: { code: number; message: string } };
      assert.equal(body.id, 7);
      assert.match(body.error.message, /"\/no\/such\/binary" cannot start: ENOENT: no such file or directory, access '\/no\/such\/binary'/);
      assert.doesNotMatch(body.error.message, /secret-value/, 'the arguments stay in the log');
      assert.equal(bridge.sessions(), 0);
      // The official client gives up at once with that message, instead of waiting on an empty stream.
      const client = new Client({ name: 't', version: '1' });
      await assert.rejects(client.connect(new StreamableHTTPClientTransport(new URL(bridge.mcpUrl))), /cannot start: ENOENT/);
      assert.ok(lines.length >= 3, 'each refused initialize is logged too');
    } finally {
      await bridge.close();
    }
  });

  test('a program on PATH that is not there, or a directory, is named the same way', async () => {
    for (const [command, reason] of [
      ['no-such-mcp-server --stdio', /"no-such-mcp-server" cannot start: ENOENT: "no-such-mcp-server" is not on PATH/],
      ['/tmp', /"\/tmp" cannot start: EISDIR/],
    ] as const) {
      const bridge = await startStdioBridge(command, limits);
      try {
        const res = await initialize(bridge.mcpUrl);
        assert.equal(res.status, 502);
        assert.match(((await res.json()) as { error: { message: string } }).error.message, reason);
      } finally {
        await bridge.close();
      }
    }
  });

  test('a program that exits before it answers: initialize gets an error at once, its stderr goes to the log', async () => {
    const { logger, lines } = capturedLogger();
    const exits = `${process.execPath} -e "console.error('bad config: no key'); process.exit(3)"`;
    const bridge = await startStdioBridge(exits, limits, { logger });
    try {
      const res = await initialize(bridge.mcpUrl);
      assert.equal(res.status, 502);
      const { error } = (await res.json()) as { error: { message: string } };
      assert.match(error.message, /exited before it answered initialize/);
      assert.doesNotMatch(error.message, /bad config/);
      assert.ok(
        lines.some((l) => String(l.stderr).includes('bad config: no key')),
        JSON.stringify(lines),
      );
    } finally {
      await bridge.close();
    }
  });

  test('attacker: a command led by VAR=value (how a stdio server is given its credential) never tells a caller or the log the value', async () => {
    const { logger, lines } = capturedLogger();
    const bridge = await startStdioBridge('UPSTREAM_TOKEN=s3cr3t-upstream-token /no/such/binary --stdio', limits, { logger });
    try {
      const res = await initialize(bridge.mcpUrl);
      assert.equal(res.status, 502);
      const { error } = (await res.json()) as { error: { message: string } };
      assert.doesNotMatch(error.message, /s3cr3t/, 'a caller read the operator’s credential');
      assert.match(error.message, /program "\/no\/such\/binary" cannot start: ENOENT/);
      assert.ok(lines.length > 0);
      assert.ok(!JSON.stringify(lines).includes('s3cr3t'), JSON.stringify(lines));
    } finally {
      await bridge.close();
    }
  });

  test('the child gets the VAR=value assignments its command starts with, in its environment', async () => {
    const { logger, lines } = capturedLogger();
    const exits = `GREETING=hello-child ${process.execPath} -e "console.error('greeting=' + process.env.GREETING); process.exit(3)"`;
    const bridge = await startStdioBridge(exits, limits, { logger });
    try {
      const res = await initialize(bridge.mcpUrl);
      assert.equal(res.status, 502);
      const { error } = (await res.json()) as { error: { message: string } };
      assert.match(error.message, new RegExp(`program "${process.execPath}" exited before it answered initialize`));
      assert.ok(
        lines.some((l) => String(l.stderr).includes('greeting=hello-child')),
        JSON.stringify(lines),
      );
    } finally {
      await bridge.close();
    }
  });
});

/** An MCP server (official SDK, stateless) whose tools are the names in `tools` now; `runs` counts every execution. */
async function changingUpstream(tools: Set<string>) {
  let runs = 0;
  const app = new Hono();
  app.all('/mcp', async (c) => {
    const server = new McpServer({ name: 'changing', version: '1.0.0' });
    for (const name of tools) {
      server.registerTool(name, { description: name }, async () => (runs++, { content: [{ type: 'text', text: `${name} ran` }] }));
    }
    const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    await server.connect(transport);
    return transport.handleRequest(c.req.raw);
  });
  const served = await listen(app, { host: '127.0.0.1', port: 0 });
  return { ...served, mcpUrl: `${served.url}/mcp`, runs: () => runs };
}

describe('a priced call of a tool the upstream does not have', () => {
  const payTo = '0x00000000000000000000000000000000000000aa' as const;
  const plan = flatPlan(priceTableSchema.parse({ default: '0.01', tools: { hidden: '0.02' } }));
  const opened: { close(): Promise<void> }[] = [];
  after(() => Promise.all(opened.map((o) => o.close())));

  async function setUp(tools: Set<string>, recheckMs = 5_000, upstreamUrl?: string) {
    const upstream = await changingUpstream(tools);
    opened.push(upstream);
    const target = { url: upstreamUrl ?? upstream.mcpUrl, headers: {}, timeoutMs: 5_000 };
    const source = toolsLookups({ recheckMs }).of(target);
    await source(); // the first list, as discovery (or an earlier call) would have had it looked up
    const gateway = await listenGateway({ upstream: target, plan, payTo, rails: [], server: 'test', tools: source });
    opened.push(gateway);
    const call = async (name: string) => {
      const res = await fetch(`${gateway.url}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: {} } }),
      });
      type Challenge = { isError?: boolean; structuredContent?: { accepts?: unknown[] } };
      type Answer = { error?: { code: number; message: string }; result?: Challenge };
      return (await res.json()) as Answer;
    };
    return { upstream, call, source };
  }

  test('is answered as MCP answers an unknown tool (-32602), not with a price; a real one is still challenged', async () => {
    const { call, upstream } = await setUp(new Set(['search']));
    assert.deepEqual((await call('nope')).error, { code: -32602, message: 'Unknown tool: nope' });
    const real = await call('search');
    assert.equal(real.result?.isError, true);
    assert.equal(real.result?.structuredContent?.accepts?.length, 1, 'the real tool is challenged');
    assert.equal(upstream.runs(), 0);
  });

  test('a tool the plan prices by name is challenged even when the upstream does not list it', async () => {
    const { call } = await setUp(new Set(['search']));
    assert.equal((await call('hidden')).result?.structuredContent?.accepts?.length, 1);
  });

  test('attacker: a tool added after the list was taken is looked up again and charged, never run free', async () => {
    const tools = new Set(['search']);
    const { call, upstream, source } = await setUp(tools, 200);
    assert.deepEqual((await call('fresh')).error?.code, -32602);
    tools.add('fresh');
    // Within recheckMs the recent list stands (refused, nothing run); past it the list is looked up again.
    await new Promise((r) => setTimeout(r, 250));
    const paid = await call('fresh');
    assert.equal(paid.result?.structuredContent?.accepts?.length, 1, JSON.stringify(paid));
    assert.equal(await source.offers('fresh'), true);
    assert.equal(upstream.runs(), 0);
  });

  test('attacker: with no list known (the upstream cannot be asked), every priced call is charged at once', async () => {
    const { call, upstream } = await setUp(new Set(['search']), 5_000, 'http://127.0.0.1:1/mcp');
    for (const name of ['nope', 'search']) assert.equal((await call(name)).result?.structuredContent?.accepts?.length, 1, name);
    assert.equal(upstream.runs(), 0);
  });
});

describe('/health and discovery, as a browser or a load balancer reads them', () => {
  const chain = useSandbox();
  const opened: { close(): Promise<void> }[] = [];
  after(() => Promise.all(opened.map((o) => o.close())));

  test('/health: ok with every upstream answering, degraded (200) with one unreachable, down (503) without the chain', async () => {
    const store = await openSqliteStore({ path: chain.dbPath() });
    opened.push(store);
    const answering = await changingUpstream(new Set(['search']));
    opened.push(answering);
    const lookups = toolsLookups();
    const good = { slug: 'good', tools: lookups.of({ url: answering.mcpUrl, headers: {}, timeoutMs: 5_000 }) };
    const gone = { slug: 'gone', tools: lookups.of({ url: 'http://127.0.0.1:1/mcp', headers: {}, timeoutMs: 5_000 }) };
    const read = async (upstreams: (typeof good)[], client = chain.client) => {
      const res = await healthRoutes({ client, store, upstreams: () => upstreams }).request('/health');
      type Health = { status: string; upstreams: Record<string, { ok: boolean; error?: string; lastAnsweredAt?: string }> };
      return { status: res.status, body: (await res.json()) as Health };
    };
    const ok = await read([good]);
    assert.equal(ok.status, 200);
    assert.equal(ok.body.status, 'ok');
    assert.equal(ok.body.upstreams.good?.ok, true);
    assert.ok(ok.body.upstreams.good?.lastAnsweredAt);
    const degraded = await read([good, gone]);
    assert.equal(degraded.status, 200);
    assert.equal(degraded.body.status, 'degraded');
    assert.equal(degraded.body.upstreams.good?.ok, true);
    assert.equal(degraded.body.upstreams.gone?.ok, false);
    assert.match(degraded.body.upstreams.gone!.error!, /could not be asked for its tools/);
    const noChain = createPublicClient({ chain: networks.local.viemChain, transport: http('http://127.0.0.1:9', { retryCount: 0 }) });
    const down = await read([good, gone], noChain);
    assert.equal(down.status, 503);
    assert.equal(down.body.status, 'down');
  });

  test('discovery and pricing answer CORS for GET from any origin, and allow no other method', async () => {
    const tools = Object.assign(async () => ({ tools: [] }), { offers: async () => undefined, lists: () => false });
    const plan = flatPlan(priceTableSchema.parse({ default: '0.01' }));
    const app = discoveryRoutes({
      network: networks.local,
      endpoints: async () => [{ path: '/mcp', plan, payTo: '0x00000000000000000000000000000000000000aa', tools }],
      facilitator: '/facilitator',
    });
    for (const path of ['/.well-known/mcp-payment', '/pricing']) {
      const res = await app.request(path, { headers: { origin: 'https://agent.example' } });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('access-control-allow-origin'), '*', path);
      assert.equal(res.headers.get('access-control-allow-credentials'), null);
      const preflight = await app.request(path, {
        method: 'OPTIONS',
        headers: { origin: 'https://agent.example', 'access-control-request-method': 'GET' },
      });
      assert.equal(preflight.status, 204);
      assert.equal(preflight.headers.get('access-control-allow-methods'), 'GET');
    }
  });
});
