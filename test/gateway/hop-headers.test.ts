import assert from 'node:assert/strict';
import { type IncomingHttpHeaders, type OutgoingHttpHeaders, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { adminRoutes } from '../../src/http/admin-routes.js';
import { createApp } from '../../src/http/app.js';
import { type Listening, listen } from '../../src/http/listen.js';
import { createLogger } from '../../src/log/logger.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import { createCredits } from '../../src/rails/credits/credits.js';
import { openDebits, openLedgerDebits } from '../../src/rails/credits/open-debits.js';
import { creditsRail } from '../../src/rails/credits/rail.js';
import type { Store } from '../../src/store/store.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { listenGateway } from '../helpers/gateway.js';
import { backends } from '../helpers/stores.js';

const ADMIN = 'admin-key-for-the-hop-header-tests-0123456789';
const PAY_TO = '0x000000000000000000000000000000000000dEaD';
const MCP_HEADERS = {
  'content-type': 'application/json',
  accept: 'application/json, text/event-stream',
  'mcp-protocol-version': '2025-06-18',
};
const servers: Listening[] = [];
let store: Store;
let counter: Awaited<ReturnType<typeof startCounterUpstream>>;
let echo: Awaited<ReturnType<typeof startEchoUpstream>>;
let admin: string;

/**
 * An MCP upstream that answers every request with the headers it received (as its result), on an
 * answer whose own Connection header names `X-Upstream-Hop`: a header for turnpike, the hop it answers.
 */
async function startEchoUpstream() {
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => {
      body += chunk;
    });
    req.on('end', () => {
      res.writeHead(200, {
        'content-type': 'application/json',
        connection: 'keep-alive, X-Upstream-Hop',
        'x-upstream-hop': 'for turnpike only',
        'x-upstream-kept': 'yes',
        'proxy-authenticate': 'Basic realm="the upstream"',
      });
      res.end(JSON.stringify({ jsonrpc: '2.0', id: (JSON.parse(body) as { id: number }).id, result: { received: req.headers } }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((done) => {
        server.close(() => done());
        server.closeAllConnections();
      }),
  };
}

/**
 * POSTs `body` as node:http sends it (fetch refuses `Connection` options and `Expect`): with
 * `Expect: 100-continue` among `headers`, the body goes only once the server has said 100 Continue;
 * with `Transfer-Encoding` among them, in chunks rather than with a length.
 */
function rawPost(url: string, headers: OutgoingHttpHeaders, body: string) {
  return new Promise<{ status: number; headers: IncomingHttpHeaders; body: string; continued: boolean }>((resolve, reject) => {
    let continued = false;
    const length = headers['transfer-encoding'] ? {} : { 'content-length': Buffer.byteLength(body) };
    const sent = request(url, { method: 'POST', headers: { ...headers, ...length }, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        text += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text, continued }));
    });
    sent.on('error', reject);
    if (String(headers.expect ?? '').toLowerCase() !== '100-continue') sent.end(body);
    else
      sent.on('continue', () => {
        continued = true;
        sent.end(body);
      });
  });
}

const adminApi = async (path: string, body?: unknown) => {
  const res = await fetch(`${admin}/admin${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return (await res.json()) as Record<string, any>;
};
const toolCall = (tool: string) => JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: tool, arguments: {} } });

describe('headers that describe one hop stop at turnpike', () => {
  before(async () => {
    [counter, echo, store] = await Promise.all([startCounterUpstream(), startEchoUpstream(), backends[0]!.open()]);
    const credits = createCredits({ store, tokenSecret: await store.instanceSecret('budget-tokens') });
    const debits = openDebits(openLedgerDebits(store.credits), { maxCallMs: async () => 20_000 });
    const plan = flatPlan(priceTableSchema.parse({ default: '0.02', free: ['other'] }));
    const rails = [creditsRail({ credits, store, debits })];
    for (const upstream of [counter, echo])
      servers.push(
        await listenGateway({
          upstream: { url: `${upstream.url}/mcp`, headers: {}, timeoutMs: 10_000 },
          plan,
          payTo: PAY_TO,
          rails,
          server: 'hops',
        }),
      );
    const app = createApp(createLogger({ level: 'silent', format: 'json' }));
    app.route('/admin', adminRoutes({ credits, store, adminKey: ADMIN, catalog: [] }));
    const served = await listen(app, { host: '127.0.0.1', port: 0 });
    servers.push(served);
    admin = served.url;
  });
  after(async () => {
    await Promise.all([...servers.map((s) => s.close()), counter.close(), echo.close()]);
    await store.close();
  });

  test('headers the caller names in Connection stop at turnpike, in both directions', async () => {
    const res = await rawPost(
      `${servers[1]!.url}/mcp`,
      {
        ...MCP_HEADERS,
        connection: 'keep-alive, X-Secret-Hop, Turnpike-Hop, Content-Type',
        'x-secret-hop': 'for turnpike only',
        'x-kept': 'yes',
        'keep-alive': 'timeout=5',
        'proxy-connection': 'keep-alive',
        'proxy-authorization': 'Basic c2VjcmV0',
        te: 'trailers',
        'transfer-encoding': 'chunked',
        trailer: 'x-checksum',
        upgrade: 'h2c',
      },
      JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'ping' }),
    );
    assert.equal(res.status, 200, res.body);
    const received = (JSON.parse(res.body) as { result: { received: IncomingHttpHeaders } }).result.received;
    assert.equal(received['x-kept'], 'yes', 'a header the caller did not name passes');
    for (const hop of [
      'x-secret-hop',
      'keep-alive',
      'transfer-encoding',
      'proxy-connection',
      'proxy-authorization',
      'te',
      'trailer',
      'upgrade',
    ])
      assert.equal(received[hop], undefined, `${hop} is not forwarded`);
    assert.equal(received['content-type'], 'application/json', 'what turnpike says of its own body stays, whatever the caller named');
    assert.match(String(received['turnpike-hop']), /^[\w-]+$/, 'the caller cannot name away the loop guard');

    assert.equal(res.headers['x-upstream-kept'], 'yes', 'a header the upstream did not name passes');
    assert.equal(res.headers['x-upstream-hop'], undefined, 'a header the upstream named in Connection stops at turnpike');
    assert.equal(res.headers['proxy-authenticate'], undefined, 'a challenge to the proxy is for turnpike, not the caller');
  });

  test('a Connection header naming thousands of fields costs turnpike no more work than a header as long naming none', async () => {
    // As many header fields, and as long a list of names, as fit in Node's 16 KB of headers: each
    // field looked up among the names one by one would be millions of string comparisons a request.
    const fields = Object.fromEntries(Array.from({ length: 900 }, (_, i) => [`x${i.toString(36)}`, '']));
    const names = Array.from({ length: 3_500 }, () => 'n').join(',');
    const named = { ...MCP_HEADERS, ...fields, connection: `keep-alive,${names}` };
    const plain = { ...MCP_HEADERS, ...fields, 'x-padding': names };
    const ping = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' });
    const cpuMs = async (headers: OutgoingHttpHeaders) => {
      const start = process.cpuUsage();
      for (let i = 0; i < 30; i++) assert.equal((await rawPost(`${servers[1]!.url}/mcp`, headers, ping)).status, 200);
      const { user, system } = process.cpuUsage(start);
      return (user + system) / 1_000;
    };
    // The least of a few rounds each, after a round of both to warm up: what the work costs, not the machine's noise.
    await cpuMs(named);
    await cpuMs(plain);
    const rounds = { named: [] as number[], plain: [] as number[] };
    for (let round = 0; round < 3; round++) {
      rounds.named.push(await cpuMs(named));
      rounds.plain.push(await cpuMs(plain));
    }
    const [withNames, withoutNames] = [Math.min(...rounds.named), Math.min(...rounds.plain)];
    assert.ok(
      withNames < withoutNames + 40,
      `30 calls: ${withNames.toFixed(0)} ms of CPU with the names, ${withoutNames.toFixed(0)} ms without`,
    );
  });

  test('a call sent with Expect: 100-continue is answered, not failed as a 502, and a paid one is charged once', async () => {
    const { id, key } = await adminApi('/keys', { name: 'expecting', usd: '1' });
    const url = `${servers[0]!.url}/mcp`;
    const runs = counter.runs();
    const expecting = { ...MCP_HEADERS, authorization: `Bearer ${key}`, expect: '100-continue' };

    const paid = await rawPost(url, expecting, toolCall('count'));
    assert.equal(paid.continued, true, 'the caller was told to send its body');
    assert.equal(paid.status, 200, paid.body);
    const answer = JSON.parse(paid.body) as { result: { content: { text: string }[] } };
    assert.equal(answer.result.content[0]!.text, String(runs + 1));
    assert.equal(counter.runs(), runs + 1);
    assert.equal(counter.lastRequest()!.headers.get('expect'), null, 'the upstream has nothing left to expect');
    const free = await rawPost(url, expecting, toolCall('other'));
    assert.equal(free.status, 200, free.body);

    // Any other expectation is one turnpike cannot meet: Node answers 417 before the gateway sees the call.
    const unmet = await rawPost(url, { ...expecting, expect: 'a-miracle' }, toolCall('count'));
    assert.equal(unmet.status, 417);
    assert.equal(counter.runs(), runs + 1, 'nothing ran for it');

    assert.equal((await adminApi(`/keys/${id}`)).balance, '980000');
    const { entries } = await adminApi(`/keys/${id}/ledger`);
    assert.deepEqual(
      (entries as { kind: string; amount: string }[]).map((e) => `${e.kind} ${e.amount}`),
      ['debit -20000', 'topup 1000000'],
    );
  });
});
