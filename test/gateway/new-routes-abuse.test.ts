import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { useSandbox } from '../helpers/chain.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { serveOnSandbox } from '../helpers/served.js';
import { POSTGRES_URL, backends, freshSchema } from '../helpers/stores.js';
import { startStripeApi } from '../helpers/stripe-api.js';
import { startWebhookReceiver } from '../helpers/webhook-receiver.js';

const chain = useSandbox({ isolate: false });
const ADMIN = 'admin-key-for-the-abuse-tests-0123456789';

for (const backend of backends)
  describe(`bad input to the post-paid, events and subject routes (${backend.name})`, { skip: backend.skip }, () => {
    let served: Awaited<ReturnType<typeof serveOnSandbox>>;
    let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;
    let stripeApi: Awaited<ReturnType<typeof startStripeApi>>;
    let opKey: string;
    let keyId: string;
    let keySecret: string;
    let endpointId: string;

    before(async () => {
      upstream = await startCounterUpstream();
      stripeApi = await startStripeApi();
      const store =
        backend.name === 'postgres'
          ? { store: { url: `${POSTGRES_URL}${POSTGRES_URL.includes('?') ? '&' : '?'}schema=${freshSchema()}&pool=4` } }
          : {};
      served = await serveOnSandbox(chain, {
        overrides: { ...store, credits: { stripeApiUrl: stripeApi.url }, operators: { allowPrivateUpstreams: true } },
        secrets: { adminKey: ADMIN, secretsKey: 'ab'.repeat(32), stripeSecretKey: stripeApi.apiKey, stripeWebhookSecret: 'whsec_abuse' },
      });
      const op = await served.api('POST', '/admin/operators', { key: ADMIN, body: { email: 'ops@example.com', name: 'ops' } });
      opKey = op.body.key;
      const server = await served.api('POST', '/operator/servers', {
        key: opKey,
        body: {
          slug: 'abused',
          name: 'abused',
          upstream: `${upstream.url}/mcp`,
          custody: 'direct',
          payTo: chain.sandbox.accounts.payees[0]!.address,
          plan: { type: 'per_call', default: '0.01' },
        },
      });
      assert.equal(server.status, 201, server.text);
      const key = await served.api('POST', '/operator/keys', { key: opKey, body: { name: 'org' } });
      keyId = key.body.id;
      keySecret = key.body.key;
      const receiver = await startWebhookReceiver();
      const hook = await served.api('POST', '/operator/webhooks', { key: opKey, body: { url: receiver.url } });
      assert.equal(hook.status, 201, hook.text);
      endpointId = hook.body.id;
    });
    after(async () => {
      await served?.gateway.close();
      await upstream?.close();
      await stripeApi?.close();
    });

    test('a delivery log paged from a time past any a store holds is an empty page or a 400, never a 500', async () => {
      for (const before of ['1e308', '9223372036854775808', '99999999999999999999', String(Number.MAX_SAFE_INTEGER + 2)]) {
        const res = await served.api('GET', `/operator/webhooks/${endpointId}/deliveries?before=${before}`, { key: opKey });
        assert.ok(res.status === 200 || res.status === 400, `before=${before}: ${res.status} ${res.text}`);
      }
      const ok = await served.api('GET', `/operator/webhooks/${endpointId}/deliveries?before=${Number.MAX_SAFE_INTEGER}`, { key: opKey });
      assert.equal(ok.status, 200, ok.text);
    });

    test('an operator firing webhook endpoints at once still has at most 10', async () => {
      const op = await served.api('POST', '/admin/operators', { key: ADMIN, body: { email: 'many@example.com', name: 'many' } });
      const receiver = await startWebhookReceiver();
      const added = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          served.api('POST', '/operator/webhooks', { key: op.body.key, body: { url: `${receiver.url}/${i}` } }),
        ),
      );
      const endpoints = (await served.api('GET', '/operator/webhooks', { key: op.body.key })).body.endpoints;
      assert.equal(endpoints.length, 10, `${endpoints.length} endpoints`);
      assert.equal(added.filter((r) => r.status === 201).length, 10);
      assert.ok(added.every((r) => r.status === 201 || r.body.error === 'endpoint_limit'));
    });

    test('wrong types, NUL, huge strings and out-of-range numbers in the new routes are 4xx, never a 500', async () => {
      const huge = 'x'.repeat(100_000);
      const bodies: unknown[] = [
        null,
        [],
        'not json',
        { url: 5 },
        { url: `http://example.com/${huge}` },
        { url: 'http://exa\u0000mple.com/' },
        { server: 'abused', customer: 'cus_1', subscription: 'sub_1', meter: 'm', creditLimitUsd: '-1' },
        { server: 'abused', customer: 'cus_1', subscription: 'sub_1', meter: 'm', creditLimitUsd: '1e30' },
        { server: 'abused', customer: 'cus_\u0000', subscription: 'sub_1', meter: 'm', creditLimitUsd: '1' },
        { server: 'abused', customer: `cus_${huge}`, subscription: 'sub_1', meter: 'm', creditLimitUsd: '1' },
        { issuer: 'https://id.example.com\u0000', subject: 'a' },
        { issuer: 'https://id.example.com', subject: huge },
        { lowBalanceUsd: 1 },
        { lowBalanceUsd: '99999999999999999999' },
        { server: 7 },
        { server: `a${'\u0000'}` },
      ];
      const routes: [string, string, Record<string, string>][] = [
        ['POST', '/operator/webhooks', { authorization: `Bearer ${opKey}` }],
        ['POST', `/operator/keys/${keyId}/postpaid`, { authorization: `Bearer ${opKey}` }],
        ['POST', `/operator/keys/${keyId}/subjects`, { authorization: `Bearer ${opKey}` }],
        ['POST', `/admin/keys/${keyId}/postpaid`, { authorization: `Bearer ${ADMIN}` }],
        ['POST', '/credits/alerts', { authorization: `Bearer ${keySecret}` }],
        ['POST', '/credits/portal', { authorization: `Bearer ${keySecret}` }],
      ];
      for (const [method, route, headers] of routes)
        for (const body of bodies) {
          const res = await served.api(method, route, { headers, body: typeof body === 'string' ? body : JSON.stringify(body) });
          assert.ok(
            res.status >= 400 && res.status < 500,
            `${method} ${route} ${JSON.stringify(body)?.slice(0, 80)}: ${res.status} ${res.text}`,
          );
        }
      for (const query of ['issuer=a&subject=b', 'issuer=https://id.example.com&subject=%00', `issuer=x&subject=${'y'.repeat(5000)}`, '']) {
        const res = await served.api('DELETE', `/operator/keys/${keyId}/subjects?${query}`, { key: opKey });
        assert.ok(res.status >= 400 && res.status < 500, `DELETE subjects ?${query.slice(0, 40)}: ${res.status} ${res.text}`);
      }
      for (const route of [
        '/operator/webhooks/%00/deliveries',
        '/operator/webhooks/we_x/deliveries?limit=-1',
        '/operator/webhooks/we_x/deliveries?limit=1e9',
      ]) {
        const res = await served.api('GET', route, { key: opKey });
        assert.ok(res.status >= 400 && res.status < 500, `GET ${route}: ${res.status} ${res.text}`);
      }
    });
  });
