import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { useSandbox } from '../helpers/chain.js';
import { serveOnSandbox } from '../helpers/served.js';
import { POSTGRES_URL, freshSchema } from '../helpers/stores.js';

const chain = useSandbox({ isolate: false });
const ADMIN = 'admin-key-for-the-console-tests-0123456789';
let served: Awaited<ReturnType<typeof serveOnSandbox>>;
let operator: { id: string; key: string };

/** A request as a browser on `origin` would send it, with the session cookie if given. */
async function browserRequest(method: string, path: string, options: { cookie?: string; origin?: string; body?: unknown } = {}) {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (options.cookie) headers.cookie = options.cookie;
  if (options.origin) headers.origin = options.origin;
  const body = options.body !== undefined ? { body: JSON.stringify(options.body) } : {};
  const res = await fetch(`${served.url}${path}`, { method, headers, ...body });
  const text = await res.text();
  const setCookie = res.headers.get('set-cookie') ?? '';
  return { status: res.status, body: (text ? JSON.parse(text) : {}) as Record<string, any>, setCookie };
}

/** Signs in from the console's own origin and answers the session cookie (`name=value`). */
async function signIn(key: string) {
  const res = await browserRequest('POST', '/console/session', { origin: served.url, body: { key } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.setCookie.split(';')[0]!;
}

describe('console sessions: a key exchanged for an HttpOnly SameSite=Strict cookie, writes only from the console’s origin', () => {
  before(async () => {
    served = await serveOnSandbox(chain, {
      overrides: { operators: { allowPrivateUpstreams: true } },
      secrets: { adminKey: ADMIN },
    });
    const res = await served.api('POST', '/admin/operators', { key: ADMIN, body: { email: 'carol@example.com', name: 'carol' } });
    operator = { id: res.body.id, key: res.body.key };
  });
  after(async () => {
    await served?.gateway.close();
  });

  test('signing in sets an HttpOnly, SameSite=Strict session cookie that holds no key, and the cookie reads the operator API', async () => {
    const res = await browserRequest('POST', '/console/session', { origin: served.url, body: { key: operator.key } });
    assert.equal(res.status, 201);
    assert.deepEqual([res.body.kind, res.body.operator.email], ['operator', 'carol@example.com']);
    assert.match(res.setCookie, /^turnpike_console=[^;]+; Max-Age=28800; Path=\/; HttpOnly; SameSite=Strict/);
    assert.ok(!res.setCookie.includes(operator.key) && !res.setCookie.includes(ADMIN), 'the cookie does not carry the key');
    const cookie = res.setCookie.split(';')[0]!;
    const me = await browserRequest('GET', '/operator', { cookie });
    assert.equal(me.status, 200);
    assert.equal(me.body.id, operator.id);
    assert.equal((await browserRequest('GET', '/console/session', { cookie })).body.kind, 'operator');
  });

  test('an unknown key, the admin key on an instance without one, or a key sent from another site signs nobody in', async () => {
    assert.equal((await browserRequest('POST', '/console/session', { origin: served.url, body: { key: `${operator.key}x` } })).status, 401);
    const customerKey = await browserRequest('POST', '/console/session', { origin: served.url, body: { key: 'tp_not-an-operator' } });
    assert.equal(customerKey.status, 401);
    const bad = await browserRequest('POST', '/console/session', { origin: served.url, body: {} });
    assert.equal(bad.status, 400);
    assert.match(bad.body.message, /^key/);
    const foreign = await browserRequest('POST', '/console/session', { origin: 'https://evil.example', body: { key: operator.key } });
    assert.equal(foreign.status, 403);
    assert.equal(foreign.body.error, 'cross_origin');
    assert.equal(foreign.setCookie, '');
  });

  test('a write made with the cookie from another origin, or with no Origin at all, is refused and changes nothing', async () => {
    const cookie = await signIn(operator.key);
    const patch = { name: 'renamed by a forged request' };
    for (const origin of ['https://evil.example', undefined, 'null']) {
      const res = await browserRequest('PATCH', '/operator', { cookie, body: patch, ...(origin ? { origin } : {}) });
      assert.equal(res.status, 403, `Origin ${origin}`);
      assert.equal(res.body.error, 'cross_origin');
    }
    assert.equal((await browserRequest('GET', '/operator', { cookie })).body.name, 'carol');
    const own = await browserRequest('PATCH', '/operator', { cookie, origin: served.url, body: { name: 'carol b' } });
    assert.equal(own.status, 200);
    assert.equal(own.body.name, 'carol b');
    const audit = await browserRequest('GET', '/operator/audit', { cookie });
    assert.equal(audit.body.entries[0].actor, `operator:${operator.id}`, 'a console change is audited as the operator’s');
  });

  test('a session is what it signed in as: an operator’s cannot use the admin API, an admin’s reads it and no operator’s', async () => {
    const operatorCookie = await signIn(operator.key);
    assert.equal((await browserRequest('GET', '/admin/operators', { cookie: operatorCookie })).status, 401);
    const adminCookie = await signIn(ADMIN);
    const list = await browserRequest('GET', '/admin/operators', { cookie: adminCookie });
    assert.equal(list.status, 200);
    assert.deepEqual(
      list.body.operators.map((o: { email: string }) => o.email),
      ['carol@example.com'],
    );
    assert.equal((await browserRequest('GET', '/operator', { cookie: adminCookie })).status, 401);
    const keys = await browserRequest('GET', '/admin/keys', { cookie: adminCookie });
    assert.equal(keys.status, 200, 'the credits admin API takes the session too');
  });

  test('a tampered or foreign-signed cookie is no session, and an explicit bearer key is judged on its own', async () => {
    const cookie = await signIn(operator.key);
    const [name, jwt] = cookie.split('=') as [string, string];
    const [header, , signature] = jwt.split('.');
    const claims = Buffer.from(JSON.stringify({ sub: 'admin', iat: 1, exp: 4_000_000_000 })).toString('base64url');
    const forged = `${name}=${header}.${claims}.${signature}`;
    assert.equal((await browserRequest('GET', '/admin/operators', { cookie: forged })).status, 401);
    assert.equal((await browserRequest('GET', '/console/session', { cookie: forged })).status, 401);
    const res = await fetch(`${served.url}/operator`, { headers: { cookie, authorization: 'Bearer op_wrong' } });
    assert.equal(res.status, 401, 'a wrong bearer key is not rescued by a valid cookie');
  });

  test('suspending an operator stops their session at once; signing out clears the cookie', async () => {
    const res = await served.api('POST', '/admin/operators', { key: ADMIN, body: { email: 'dave@example.com', name: 'dave' } });
    const cookie = await signIn(res.body.key);
    assert.equal((await browserRequest('GET', '/operator', { cookie })).status, 200);
    assert.equal((await served.api('POST', `/admin/operators/${res.body.id}/suspend`, { key: ADMIN })).status, 200);
    const suspended = await browserRequest('GET', '/operator', { cookie });
    assert.equal(suspended.status, 403);
    assert.equal(suspended.body.error, 'operator_suspended');

    const out = await browserRequest('DELETE', '/console/session', { cookie, origin: served.url });
    assert.equal(out.status, 200);
    assert.match(out.setCookie, /^turnpike_console=; Max-Age=0; Path=\//);
  });

  test('no answer of the console, operator or admin APIs may be kept by a browser or proxy cache (Cache-Control: no-store)', async () => {
    const cookie = await signIn(operator.key);
    const adminCookie = await signIn(ADMIN);
    const answers = [
      await fetch(`${served.url}/console/session`, { method: 'POST', headers: { origin: served.url }, body: '{"key":"op_x"}' }),
      await fetch(`${served.url}/console/session`, { headers: { cookie } }),
      await fetch(`${served.url}/operator`, { headers: { cookie } }),
      await fetch(`${served.url}/operator/servers`, { headers: { authorization: `Bearer ${operator.key}` } }),
      await fetch(`${served.url}/operator/analytics?format=csv`, { headers: { cookie } }),
      await fetch(`${served.url}/admin/operators`, { headers: { cookie: adminCookie } }),
      await fetch(`${served.url}/admin/keys`, { headers: { cookie: adminCookie } }),
      await fetch(`${served.url}/operator`, { headers: { authorization: 'Bearer op_wrong' } }),
    ];
    for (const res of answers) assert.equal(res.headers.get('cache-control'), 'no-store', `${res.url} ${res.status}`);
  });

  test('signing out ends the session itself: a copy of its cookie is refused by every instance on the store, while the operator’s other sessions go on', async () => {
    const url = `${POSTGRES_URL}${POSTGRES_URL.includes('?') ? '&' : '?'}schema=${freshSchema()}&pool=2`;
    const one = await serveOnSandbox(chain, { overrides: { store: { url } }, secrets: { adminKey: ADMIN } });
    // Each instance on a store sends with its own relayer.
    const two = await serveOnSandbox(chain, { overrides: { store: { url } }, secrets: { adminKey: ADMIN }, relayer: 3 }).catch(
      async (error: unknown) => {
        await one.gateway.close();
        throw error;
      },
    );
    try {
      const created = await one.api('POST', '/admin/operators', { key: ADMIN, body: { email: 'erin@example.com', name: 'erin' } });
      const session = async (at: typeof one, key: string) => {
        const res = await fetch(`${at.url}/console/session`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', origin: at.url },
          body: JSON.stringify({ key }),
        });
        assert.equal(res.status, 201);
        return res.headers.get('set-cookie')!.split(';')[0]!;
      };
      const status = async (at: typeof one, cookie: string, path = '/operator') =>
        (await fetch(`${at.url}${path}`, { headers: { cookie } })).status;
      const stolen = await session(one, created.body.key);
      const other = await session(two, created.body.key);
      const admin = await session(one, ADMIN);
      assert.deepEqual([await status(one, stolen), await status(two, stolen)], [200, 200]);

      const out = await fetch(`${one.url}/console/session`, { method: 'DELETE', headers: { cookie: stolen, origin: one.url } });
      assert.equal(out.status, 200);
      assert.match(out.headers.get('set-cookie') ?? '', /^turnpike_console=; Max-Age=0/);
      for (const at of [one, two]) {
        assert.equal(await status(at, stolen), 401, 'the signed-out cookie, replayed');
        assert.equal(await status(at, stolen, '/console/session'), 401);
        assert.equal(await status(at, other), 200, 'another session of the same operator');
        assert.equal(await status(at, admin, '/admin/operators'), 200);
      }
      const again = await fetch(`${two.url}/console/session`, { method: 'DELETE', headers: { cookie: stolen, origin: two.url } });
      assert.equal(again.status, 200, 'signing out twice is no error');
      const garbage = await fetch(`${two.url}/console/session`, {
        method: 'DELETE',
        headers: { cookie: 'turnpike_console=x.y.z', origin: two.url },
      });
      assert.equal(garbage.status, 200, 'a cookie that is no session is only cleared');
      assert.equal(await status(two, other), 200);
    } finally {
      await one.gateway.close();
      await two.gateway.close();
    }
  });

  test('a NUL character in a console request’s path or JSON body is a 400 on PostgreSQL, never a 500, and stores nothing', async () => {
    const url = `${POSTGRES_URL}${POSTGRES_URL.includes('?') ? '&' : '?'}schema=${freshSchema()}&pool=2`;
    const pg = await serveOnSandbox(chain, { overrides: { store: { url } }, secrets: { adminKey: ADMIN } });
    try {
      const created = await pg.api('POST', '/admin/operators', { key: ADMIN, body: { email: 'nul@example.com', name: 'nul' } });
      const key = created.body.key as string;
      const cases: [string, string, string?][] = [
        ['GET', '/admin/operators/%00'],
        ['GET', '/operator/servers/a%00b'],
        ['GET', '/operator/withdrawals/%00'],
        ['GET', '/operator/keys/%00'],
        ['POST', '/mcp/%00', '{}'],
        ['PATCH', '/operator', '{"name":"a\\u0000b"}'],
        ['POST', '/admin/operators', '{"email":"x@example.com","name":"a\\u0000"}'],
      ];
      for (const [method, path, body] of cases) {
        const authorization = `Bearer ${path.startsWith('/admin') ? ADMIN : key}`;
        const headers = { authorization, 'content-type': 'application/json' };
        const res = await fetch(`${pg.url}${path}`, { method, headers, ...(body ? { body } : {}) });
        assert.equal(res.status, 400, `${method} ${path} ${body ?? ''}`);
        assert.equal(((await res.json()) as { error: string }).error, 'invalid_request');
      }
      assert.equal((await pg.api('GET', '/operator', { key })).body.name, 'nul');
      assert.equal((await pg.api('GET', '/admin/operators', { key: ADMIN })).body.operators.length, 1);
    } finally {
      await pg.gateway.close();
    }
  });

  test('an operator’s upstream can neither run a page, set a cookie on the console’s origin, nor forge turnpike’s payment headers through /mcp/<slug>', async () => {
    // A hostile upstream: every answer an HTML page with a script, a cookie that would replace the console's session,
    // and a receipt, a challenge and a balance turnpike never wrote.
    const forged = ['payment-response', 'x-payment-response', 'payment-required', 'x-credits-remaining', 'idempotent-replayed'];
    const hostile = createServer((_req, res) => {
      res.writeHead(200, {
        'content-type': 'text/html',
        'set-cookie': 'turnpike_console=fixed; Path=/admin',
        ...Object.fromEntries(forged.map((name) => [name, 'forged'])),
      });
      res.end('<script>fetch("/admin/operators", { method: "POST" })</script>');
    });
    await new Promise<void>((resolve) => hostile.listen(0, '127.0.0.1', resolve));
    try {
      const upstream = `http://127.0.0.1:${(hostile.address() as AddressInfo).port}/mcp`;
      const body = { slug: 'hostile', name: 'hostile', upstream, custody: 'platform', plan: { type: 'per_call', default: '0.01' } };
      const created = await served.api('POST', '/operator/servers', { key: operator.key, body });
      assert.equal(created.status, 201, created.text);
      const page = await fetch(`${served.url}/mcp/hostile`, { headers: { accept: 'text/html,application/json,text/event-stream' } });
      await page.text();
      assert.equal(page.headers.get('set-cookie'), null, 'no upstream sets a cookie on this origin');
      for (const name of forged) assert.equal(page.headers.get(name), null, `${name} is turnpike's alone`);
      assert.match(page.headers.get('content-security-policy') ?? '', /(^|;\s*)sandbox(;|$)/, 'an upstream’s page runs in no origin');
      assert.equal(page.headers.get('x-content-type-options'), 'nosniff');
    } finally {
      await new Promise((resolve) => hostile.close(resolve));
      await served.api('DELETE', '/operator/servers/hostile', { key: operator.key });
    }
  });

  test('behind a TLS proxy (credits.publicUrl https): the public origin may write, and the cookie is Secure', async () => {
    const overrides = { credits: { publicUrl: 'https://turnpike.example' } };
    const proxied = await serveOnSandbox(chain, { overrides, secrets: { adminKey: ADMIN } });
    try {
      const headers = { 'content-type': 'application/json' };
      const body = JSON.stringify({ key: ADMIN });
      const signIn = (origin: string) => fetch(`${proxied.url}/console/session`, { method: 'POST', headers: { ...headers, origin }, body });
      const res = await signIn('https://turnpike.example');
      assert.equal(res.status, 201);
      assert.match(res.headers.get('set-cookie')!, /; HttpOnly; Secure; SameSite=Strict/);
      assert.equal((await signIn('https://other.example')).status, 403);
      const cookie = res.headers.get('set-cookie')!.split(';')[0]!;
      const write = (origin: string) =>
        fetch(`${proxied.url}/admin/operators`, { method: 'POST', headers: { 'content-type': 'text/plain', origin, cookie }, body: '{}' });
      const plain = await write('http://turnpike.example');
      assert.equal(plain.status, 403, 'a page served over plain http on the same host (a network attacker’s) may not write');
      assert.equal(((await plain.json()) as { error: string }).error, 'cross_origin');
      assert.equal((await signIn('http://turnpike.example')).status, 403);
    } finally {
      await proxied.gateway.close();
    }
  });

  test('the console page and its files are served locally, the page with a same-origin-only content security policy', async () => {
    const page = await fetch(`${served.url}/console`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type')!, /^text\/html/);
    assert.match(page.headers.get('content-security-policy')!, /script-src 'self'; .*frame-ancestors 'none'/);
    const html = await page.text();
    for (const src of html.match(/(?:src|href)="\/console\/[^"]+"/g)!) {
      const res = await fetch(`${served.url}${src.split('"')[1]}`);
      assert.equal(res.status, 200, src);
      assert.ok((await res.text()).length > 100, src);
    }
    assert.doesNotMatch(html, /https?:\/\//, 'nothing is loaded from another site');
  });
});
