import assert from 'node:assert/strict';
import { type Socket, createServer } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { TOOLS_LOOKUP } from '../../src/upstream/upstream-tools.js';
import { useSandbox } from '../helpers/chain.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { eventually, serveOnSandbox } from '../helpers/served.js';

const chain = useSandbox({ isolate: false });
const ADMIN = 'admin-key-for-the-discovery-tests-0123456789';

type Listed = { url: string; tools: { name: string }[]; toolsAsOf?: string; toolsError?: string };
type Served = Awaited<ReturnType<typeof serveOnSandbox>>;

/** A TCP server that accepts every connection and never writes a byte: the upstream that stalls. */
async function startSilentUpstream() {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    close: () => new Promise<void>((resolve) => (sockets.forEach((s) => s.destroy()), server.close(() => resolve()))),
  };
}

async function operatorOf(served: Served) {
  const res = await served.api('POST', '/admin/operators', { key: ADMIN, body: { email: 'op@example.com', name: 'op' } });
  assert.equal(res.status, 201, res.text);
  return res.body.key as string;
}

async function register(served: Served, key: string, slug: string, upstream: string, extra: Record<string, unknown> = {}) {
  const body = { slug, name: slug, upstream, custody: 'platform', plan: { type: 'per_call', default: '0.01' }, ...extra };
  const res = await served.api('POST', '/operator/servers', { key, body });
  assert.equal(res.status, 201, res.text);
}

async function discover(served: Served) {
  const started = performance.now();
  const res = await served.api('GET', '/.well-known/mcp-payment');
  const ms = performance.now() - started;
  assert.equal(res.status, 200, res.text);
  const slugOf = (e: Listed) => new URL(e.url).pathname.split('/').pop();
  const bySlug: Record<string, Listed> = Object.fromEntries((res.body.endpoints as Listed[]).map((e) => [slugOf(e), e]));
  return { ms, bySlug };
}

describe('discovery survives its upstreams', () => {
  let counter: Awaited<ReturnType<typeof startCounterUpstream>>;
  before(async () => {
    counter = await startCounterUpstream();
  });
  after(async () => {
    await counter?.close();
  });

  const stall =
    'an upstream that accepts and never answers (timeoutSeconds 3600) holds no discovery request up: < 6 s first, then less than the 3 s a first read waits';
  test(stall, { timeout: 30_000 }, async () => {
    const silent = await startSilentUpstream();
    const served = await serveOnSandbox(chain, { overrides: { operators: { allowPrivateUpstreams: true } }, secrets: { adminKey: ADMIN } });
    try {
      const key = await operatorOf(served);
      await register(served, key, 'silent', silent.url, { timeoutSeconds: 3600 });
      await register(served, key, 'counter', `${counter.url}/mcp`);

      const first = await discover(served);
      assert.ok(first.ms < 6_000, `first discovery took ${first.ms} ms`);
      assert.ok(
        first.bySlug['counter']!.tools.some((t) => t.name === 'count'),
        'the answering server’s tools are listed',
      );
      assert.ok(!Number.isNaN(Date.parse(first.bySlug['counter']!.toolsAsOf!)));
      assert.equal(first.bySlug['counter']!.toolsError, undefined);
      assert.deepEqual(first.bySlug['silent']!.tools, []);
      assert.match(first.bySlug['silent']!.toolsError!, /not listed its tools yet|no answer within 5 s/);

      // Held up by the silent lookup, a read would take waitMs (3 s) at least; a loaded machine may take a second or two.
      const again = await discover(served);
      assert.ok(again.ms < TOOLS_LOOKUP.waitMs, `discovery took ${again.ms} ms the second time`);
      assert.ok(again.bySlug['counter']!.tools.some((t) => t.name === 'count'));
      const started = performance.now();
      const pricing = await served.api('GET', '/pricing');
      assert.equal(pricing.status, 200);
      assert.ok(performance.now() - started < TOOLS_LOOKUP.waitMs);
      assert.ok((pricing.body.prices as { tool: string }[]).some((p) => p.tool === 'count'));

      // The lookup is given up after its own 5 s, not the server's hour, and says so.
      const timedOut = await eventually(
        () => discover(served),
        (d) => /no answer within 5 s/.test(d.bySlug['silent']!.toolsError ?? ''),
        'the silent server’s lookup to time out',
      );
      assert.ok(timedOut.ms < TOOLS_LOOKUP.waitMs);
    } finally {
      await served.gateway.close();
      await silent.close();
    }
  });

  test('without TURNPIKE_SECRETS_KEY, a server with a sealed secret is listed with an error (200, not 500); calls to it get 503', async () => {
    const sealing = await serveOnSandbox(chain, {
      overrides: { operators: { allowPrivateUpstreams: true } },
      secrets: { adminKey: ADMIN, secretsKey: 'cd'.repeat(32) },
    });
    const key = await operatorOf(sealing);
    await register(sealing, key, 'sealed', `${counter.url}/mcp`, { auth: { mode: 'header', secret: 'upstream-secret-0123456789' } });
    await register(sealing, key, 'plain', `${counter.url}/mcp`);
    await sealing.gateway.close();

    const overrides = { dataDir: sealing.dataDir, operators: { allowPrivateUpstreams: true } };
    const served = await serveOnSandbox(chain, { overrides, secrets: { adminKey: ADMIN } });
    try {
      const { bySlug } = await discover(served);
      assert.match(bySlug['sealed']!.toolsError!, /cannot open the server’s upstream credential.*TURNPIKE_SECRETS_KEY/);
      assert.deepEqual(
        bySlug['sealed']!.tools.map((t) => t.name),
        [],
      );
      assert.ok(bySlug['plain']!.tools.some((t) => t.name === 'count'));
      const pricing = await served.api('GET', '/pricing');
      assert.equal(pricing.status, 200, pricing.text);

      const call = await fetch(`${served.url}/mcp/sealed`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
      });
      assert.equal(call.status, 503);
      assert.match(((await call.json()) as { error: { message: string } }).error.message, /upstream credential/);
    } finally {
      await served.gateway.close();
    }
  });
});

describe('/metrics is the admin’s once there is one', () => {
  test('an unlisted server’s slug, calls and denials are not readable by anyone from /metrics; the admin key reads them', async () => {
    const counter = await startCounterUpstream();
    const served = await serveOnSandbox(chain, { overrides: { operators: { allowPrivateUpstreams: true } }, secrets: { adminKey: ADMIN } });
    try {
      const key = await operatorOf(served);
      await register(served, key, 'unlisted-7f3a', `${counter.url}/mcp`, { public: false });
      const { bySlug } = await discover(served);
      assert.equal(bySlug['unlisted-7f3a'], undefined, 'not in discovery');
      const call = await fetch(`${served.url}/mcp/unlisted-7f3a`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'count', arguments: {} } }),
      });
      assert.equal(call.status, 200);
      await call.text();

      const anyone = await served.api('GET', '/metrics');
      assert.doesNotMatch(anyone.text, /unlisted-7f3a/);
      assert.equal(anyone.status, 401);
      const admin = await served.api('GET', '/metrics', { key: ADMIN });
      assert.equal(admin.status, 200);
      assert.match(admin.text, /turnpike_tool_calls_total\{server="unlisted-7f3a",tool="[a-z]+",outcome="challenged"\} 1/);
    } finally {
      await served.gateway.close();
      await counter.close();
    }
  });
});
