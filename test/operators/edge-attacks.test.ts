import assert from 'node:assert/strict';
import { type Server, createServer } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { fetch } from 'undici';
import { useSandbox } from '../helpers/chain.js';
import { serveOnSandbox } from '../helpers/served.js';

const chain = useSandbox({ isolate: false });
const ADMIN = 'admin-key-for-the-edge-attack-tests-0123456789';
/** The operator's upstream credential, sent in the upstream URL's query (`auth.mode: 'query'`). */
const SECRET = 'query-secret-of-the-operator-must-never-leak-7f3a';
let served: Awaited<ReturnType<typeof serveOnSandbox>>;
let api: typeof served.api;
/** An upstream that takes each connection and drops it at once: every call to it fails in transport. */
let dropper: Server;
let dropperUrl: string;

async function callTool(slug: string, apiKey: string) {
  const res = await fetch(`${served.url}/mcp/${slug}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
      authorization: `Bearer ${apiKey}`,
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'anything', arguments: {} } }),
  });
  return { status: res.status, text: await res.text() };
}

describe('operator edges under attack: what a paying customer can read of an operator’s upstream', () => {
  before(async () => {
    dropper = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => dropper.listen(0, '127.0.0.1', resolve));
    dropperUrl = `http://127.0.0.1:${(dropper.address() as { port: number }).port}/mcp`;
    served = await serveOnSandbox(chain, {
      overrides: { operators: { allowPrivateUpstreams: true } },
      secrets: { adminKey: ADMIN, secretsKey: 'cd'.repeat(32) },
    });
    api = served.api;
  });
  after(async () => {
    await served.gateway.close();
    await new Promise((resolve) => dropper.close(resolve));
  });

  test('a paid call whose upstream cannot be reached is refunded with a reason that names neither the upstream’s URL nor its query credential', async () => {
    const operator = await api('POST', '/admin/operators', { key: ADMIN, body: { email: 'q@example.com', name: 'q' } });
    assert.equal(operator.status, 201, operator.text);
    const server = await api('POST', '/operator/servers', {
      key: operator.body.key,
      body: {
        slug: 'querysecret',
        name: 'query secret',
        upstream: dropperUrl,
        auth: { mode: 'query', name: 'api_key', secret: SECRET },
        custody: 'platform',
        plan: { type: 'per_call', default: '0.01' },
      },
    });
    assert.equal(server.status, 201, server.text);
    const customer = await api('POST', '/admin/keys', { key: ADMIN, body: { name: 'curious customer', usd: '1' } });
    assert.equal(customer.status, 201, customer.text);

    const answer = await callTool('querysecret', customer.body.key);
    assert.equal(answer.status, 502, answer.text);
    assert.doesNotMatch(answer.text, new RegExp(SECRET));

    // The customer reads their own ledger: the refund is there, and says why in words of its own.
    const ledger = await api('GET', '/credits/ledger', { key: customer.body.key });
    assert.equal(ledger.status, 200, ledger.text);
    const refund = ledger.body.entries.find((e: { kind: string }) => e.kind === 'refund');
    assert.ok(refund, `a refund was written: ${ledger.text}`);
    assert.match(refund.reason, /unreachable/);
    assert.doesNotMatch(ledger.text, new RegExp(SECRET), 'the operator’s upstream credential is in the customer’s ledger');
    assert.doesNotMatch(ledger.text, /127\.0\.0\.1/, 'the upstream’s address is in the customer’s ledger');
  });

  test('a paid call whose upstream refuses the connection is refunded without the upstream’s address or port, which the socket error names', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as { port: number }).port;
    await new Promise((resolve) => closed.close(resolve));
    const operator = await api('POST', '/admin/operators', { key: ADMIN, body: { email: 'r@example.com', name: 'r' } });
    const server = await api('POST', '/operator/servers', {
      key: operator.body.key,
      body: {
        slug: 'refuses',
        name: 'refuses',
        upstream: `http://127.0.0.1:${port}/hidden-path`,
        custody: 'platform',
        plan: { type: 'per_call', default: '0.01' },
      },
    });
    assert.equal(server.status, 201, server.text);
    const customer = await api('POST', '/admin/keys', { key: ADMIN, body: { name: 'prober', usd: '1' } });
    assert.equal((await callTool('refuses', customer.body.key)).status, 502);
    const ledger = await api('GET', '/credits/ledger', { key: customer.body.key });
    const refund = ledger.body.entries.find((e: { kind: string }) => e.kind === 'refund');
    assert.ok(refund, ledger.text);
    assert.match(refund.reason, /^upstream unreachable: ECONNREFUSED$/);
    assert.doesNotMatch(
      ledger.text,
      new RegExp(`127\\.0\\.0\\.1|:${port}\\b|hidden-path`),
      'the ledger tells the customer where the upstream is',
    );
  });
});
