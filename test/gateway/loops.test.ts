import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { flatPlan } from '../../src/pricing/plans.js';
import { TOOLS_LOOKUP } from '../../src/upstream/upstream-tools.js';
import { useSandbox } from '../helpers/chain.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { eventually, serveOnSandbox } from '../helpers/served.js';

const chain = useSandbox({ isolate: false });
const ADMIN = 'admin-key-for-the-loop-tests-0123456789abcdef';
const PUBLIC_URL = 'https://turnpike.example.com';
type Served = Awaited<ReturnType<typeof serveOnSandbox>>;
let first: Served;
let second: Served;
let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;

const MCP_HEADERS = {
  'content-type': 'application/json',
  accept: 'application/json, text/event-stream',
  'mcp-protocol-version': '2025-06-18',
};
const openDescriptors = () => readdirSync('/proc/self/fd').length;

async function operatorOn(served: Served) {
  const body = { email: `loop-${Math.random()}@example.com`, name: 'looper' };
  const res = await served.api('POST', '/admin/operators', { key: ADMIN, body });
  assert.equal(res.status, 201, res.text);
  return res.body.key as string;
}

const register = (served: Served, key: string, slug: string, upstreamUrl: string) => {
  const payTo = chain.sandbox.accounts.payees[0]!.address;
  const body = { slug, name: slug, upstream: upstreamUrl, custody: 'direct', payTo, plan: { type: 'per_call', default: '0.01' } };
  return served.api('POST', '/operator/servers', { key, body });
};

/** One unauthenticated MCP `ping`, given up after `ms`. */
async function ping(url: string, headers: Record<string, string> = {}, ms = 2_000) {
  const started = Date.now();
  const res = await fetch(url, {
    method: 'POST',
    headers: { ...MCP_HEADERS, ...headers },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
    signal: AbortSignal.timeout(ms),
  });
  const body = (await res.json()) as { error?: { code: number; message: string; data?: { error: string } } };
  return { status: res.status, body, ms: Date.now() - started };
}

describe('an upstream that is turnpike itself', () => {
  before(async () => {
    upstream = await startCounterUpstream();
    const http = { port: 0, upstreamConnections: 4 };
    const overrides = { operators: { allowPrivateUpstreams: true }, credits: { publicUrl: PUBLIC_URL }, http };
    first = await serveOnSandbox(chain, { overrides, secrets: { adminKey: ADMIN } });
    second = await serveOnSandbox(chain, { overrides, secrets: { adminKey: ADMIN }, relayer: 3 });
  });
  after(async () => {
    await first?.gateway.close();
    await second?.gateway.close();
    await upstream?.close();
  });

  test('a server whose upstream is this turnpike, at any of its addresses or public URL, is refused as upstream_is_turnpike', async () => {
    const key = await operatorOn(first);
    const { port } = new URL(first.url);
    for (const self of [
      `${first.url}/mcp/loop-x`,
      `${first.url}/mcp/another-slug`,
      `http://localhost:${port}/mcp/loop-x`,
      `http://[::1]:${port}/mcp/loop-x`,
      `http://0.0.0.0:${port}/mcp/loop-x`,
      `${PUBLIC_URL}/mcp/loop-x`,
      `${PUBLIC_URL}:443/anything`,
    ]) {
      const res = await register(first, key, 'loop-x', self);
      assert.equal(res.status, 400, `${self}: ${res.text}`);
      assert.equal(res.body.error, 'upstream_is_turnpike', self);
      assert.equal(res.body.field, 'upstream');
    }
    const changed = await register(first, key, 'loop-ok', `${upstream.url}/mcp`);
    assert.equal(changed.status, 201, changed.text);
    const patched = await first.api('PATCH', '/operator/servers/loop-ok', { key, body: { upstream: `${first.url}/mcp/loop-ok` } });
    assert.equal(patched.body.error, 'upstream_is_turnpike', patched.text);
    assert.equal((await ping(`${first.url}/mcp/loop-ok`)).status, 200, 'the server still forwards to its real upstream');
  });

  test('a loop through two turnpikes that registration cannot see ends a ping at once with 508, holding no descriptors', async () => {
    const [a, b] = [await operatorOn(first), await operatorOn(second)];
    assert.equal((await register(first, a, 'loop-a', `${second.url}/mcp/loop-b`)).status, 201);
    assert.equal((await register(second, b, 'loop-b', `${first.url}/mcp/loop-a`)).status, 201);
    const before = openDescriptors();
    const answer = await ping(`${first.url}/mcp/loop-a`);
    assert.equal(answer.status, 508);
    assert.equal(answer.body.error?.data?.error, 'loop_detected');
    assert.match(answer.body.error!.message, /loop detected: .*turnpike/);
    assert.ok(answer.ms < 2_000, `took ${answer.ms} ms`);
    const grown = openDescriptors() - before;
    assert.ok(grown < 50, `${grown} more open descriptors`);
    assert.equal((await first.api('GET', '/health')).status, 200);
  });

  test('discovery with a looping server answers promptly, with that server’s tools error', async () => {
    const started = Date.now();
    const res = await fetch(`${first.url}/.well-known/mcp-payment`, { signal: AbortSignal.timeout(10_000) });
    assert.equal(res.status, 200);
    const { endpoints } = (await res.json()) as { endpoints: { url: string; toolsError?: string }[] };
    const looped = endpoints.find((e) => e.url.endsWith('/mcp/loop-a'));
    assert.match(looped?.toolsError ?? '', /loop detected/);
    // A lookup the loop held up would hold discovery the whole waitMs (then say "not listed yet"); a loaded machine may take a second or two.
    const took = Date.now() - started;
    assert.ok(took < TOOLS_LOOKUP.waitMs, `took ${took} ms`);
  });

  test('a hop header a caller sends is kept with this turnpike added after it, and a chain of eight is refused unforwarded', async () => {
    const key = await operatorOn(first);
    assert.equal((await register(first, key, 'hops', `${upstream.url}/mcp`)).status, 201);
    assert.equal((await ping(`${first.url}/mcp/hops`)).status, 200);
    const own = upstream.lastRequest()!.headers.get('turnpike-hop')!;
    assert.match(own, /^[\w-]{16}$/);

    assert.equal((await ping(`${first.url}/mcp/hops`, { 'turnpike-hop': 'another-turnpike, not a token!' })).status, 200);
    assert.equal(upstream.lastRequest()!.headers.get('turnpike-hop'), `another-turnpike, ${own}`);

    const seen = upstream.lastRequest();
    const chain8 = Array.from({ length: 8 }, (_, i) => `turnpike-${i}`).join(', ');
    const refused = await ping(`${first.url}/mcp/hops`, { 'turnpike-hop': chain8 });
    assert.equal(refused.status, 508);
    assert.equal(upstream.lastRequest(), seen, 'the upstream was not contacted');
  });

  test('requests to an upstream that never answers share http.upstreamConnections connections instead of one each', async () => {
    let connections = 0;
    const hanging = createServer(() => {});
    hanging.on('connection', () => connections++);
    await new Promise<void>((resolve) => hanging.listen(0, '127.0.0.1', resolve));
    const key = await operatorOn(first);
    const hangUrl = `http://127.0.0.1:${(hanging.address() as AddressInfo).port}/mcp`;
    assert.equal((await register(first, key, 'hangs', hangUrl)).status, 201);
    const callers = new AbortController();
    const pings = Array.from({ length: 40 }, () =>
      fetch(`${first.url}/mcp/hangs`, {
        method: 'POST',
        headers: MCP_HEADERS,
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
        signal: callers.signal,
      }).catch(() => undefined),
    );
    // Four open however slowly the 40 arrive; then a while for a fifth that must not come.
    await eventually(
      async () => connections,
      (n) => n >= 4,
      'the upstream connections opened',
    );
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(connections, 4, 'connections opened to the upstream');
    callers.abort();
    await Promise.all(pings);
    hanging.closeAllConnections();
    await new Promise((r) => hanging.close(r));
  });

  test('a caller who hangs up a call that passes through cancels it at the upstream (in MCP a disconnect is the cancellation)', async () => {
    let received = 0;
    let cancelled = 0;
    const hanging = createServer((_req, res) => {
      received++;
      res.on('close', () => cancelled++);
    });
    await new Promise<void>((resolve) => hanging.listen(0, '127.0.0.1', resolve));
    const key = await operatorOn(first);
    const hangUrl = `http://127.0.0.1:${(hanging.address() as AddressInfo).port}/mcp`;
    assert.equal((await register(first, key, 'hangs-up', hangUrl)).status, 201);
    const caller = new AbortController();
    const call = fetch(`${first.url}/mcp/hangs-up`, {
      method: 'POST',
      headers: MCP_HEADERS,
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
      signal: caller.signal,
    }).catch(() => undefined);
    await eventually(
      async () => received,
      (n) => n > 0,
      'the call to reach the upstream',
    );
    assert.equal(received, 1, 'the call reached the upstream');
    caller.abort();
    await call;
    await eventually(
      async () => cancelled,
      (n) => n > 0,
      'the upstream to see its request cancelled',
    );
    assert.equal(cancelled, 1, 'the upstream saw its request cancelled');
    hanging.closeAllConnections();
    await new Promise((r) => hanging.close(r));
  });

  test('serve refuses to start when a configured server’s upstream is its own listening port, naming it without its key', async () => {
    const free = createTcpServer();
    await new Promise<void>((resolve) => free.listen(0, '127.0.0.1', resolve));
    const { port } = free.address() as AddressInfo;
    await new Promise((r) => free.close(r));
    const key = 'q9Z8y7X6w5V4u3T2s1R0';
    const upstream = { url: `http://localhost:${port}/mcp/self?api_key=${key}`, headers: {}, timeoutMs: 5_000 };
    const plan = flatPlan({ default: 10_000n, tools: {}, free: [] });
    const payTo = chain.sandbox.accounts.payees[0]!.address;
    const endpoint = { slug: 'self', path: '/mcp/self', upstream, plan, payTo, challenge: 'tool-result' as const };
    const started = serveOnSandbox(chain, { overrides: { http: { port } }, secrets: {}, relayer: 1, endpoints: [endpoint] });
    await assert.rejects(started, (error: Error) => {
      assert.match(error.message, /server self: its upstream http:\/\/localhost:\d+\/mcp\/self\?api_key=\[redacted\] is this turnpike/);
      assert.ok(!error.message.includes(key), 'the upstream’s key is not in the error serve prints');
      return true;
    });
    const reopened = createTcpServer();
    await new Promise<void>((resolve) => reopened.listen(port, '127.0.0.1', resolve));
    await new Promise((r) => reopened.close(r));
  });
});
