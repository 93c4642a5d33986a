import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { useSandbox } from '../helpers/chain.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { serveOnSandbox } from '../helpers/served.js';
import { POSTGRES_URL, freshSchema } from '../helpers/stores.js';

const chain = useSandbox({ isolate: false });
const ADMIN = 'admin-key-for-the-nul-character-tests-0123';
let served: Awaited<ReturnType<typeof serveOnSandbox>>;
let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;
let apiKey: string;

describe('a NUL character, which PostgreSQL refuses in any text, is the caller’s mistake on a PostgreSQL store', () => {
  before(async () => {
    upstream = await startCounterUpstream();
    const url = `${POSTGRES_URL}${POSTGRES_URL.includes('?') ? '&' : '?'}schema=${freshSchema()}&pool=2`;
    const overrides = { store: { url }, operators: { allowPrivateUpstreams: true }, credits: { enabled: true } };
    served = await serveOnSandbox(chain, { overrides, secrets: { adminKey: ADMIN } });
    const operator = await served.api('POST', '/admin/operators', { key: ADMIN, body: { email: 'nul@example.com', name: 'nul' } });
    const payTo = chain.sandbox.accounts.payees[0]!.address;
    const plan = { type: 'per_call', default: '0.01' };
    const body = { slug: 'counter', name: 'counter', upstream: `${upstream.url}/mcp`, custody: 'direct', payTo, plan };
    assert.equal((await served.api('POST', '/operator/servers', { key: operator.body.key, body })).status, 201);
    apiKey = (await served.api('POST', '/admin/keys', { key: ADMIN, body: { name: 'payer', usd: '1' } })).body.key;
  });
  after(async () => {
    await served?.gateway.close();
    await upstream?.close();
  });

  test('a tools/call whose tool name holds a NUL is an invalid-params answer, not a 500, and charges nothing', async () => {
    const accept = 'application/json, text/event-stream';
    const headers = { 'content-type': 'application/json', accept, authorization: `Bearer ${apiKey}` };
    const call = { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'count\u0000', arguments: {} } };
    const res = await fetch(`${served.url}/mcp/counter`, { method: 'POST', headers, body: JSON.stringify(call) });
    assert.equal(res.status, 400);
    const answer = (await res.json()) as { error?: { code: number; message: string } };
    assert.equal(answer.error?.code, -32600);
    assert.match(answer.error!.message, /NUL/);
    const me = await served.api('GET', '/credits/balance', { key: apiKey });
    assert.equal(me.body.balance, '1000000', JSON.stringify(me.body));
  });
});
