import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { FacilitatorUnavailableError } from '../../src/facilitator/errors.js';
import { networks } from '../../src/chain/networks.js';
import { purposes } from '../../src/facilitator/purposes.js';
import { remoteFacilitator } from '../../src/facilitator/remote.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { createApp } from '../../src/http/app.js';
import { facilitatorRoutes } from '../../src/http/facilitator-routes.js';
import { failureThrottle } from '../../src/rails/failure-throttle.js';
import { type Listening, listen } from '../../src/http/listen.js';
import { createLogger } from '../../src/log/logger.js';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { useSandbox } from '../helpers/chain.js';
import { v2Request } from '../helpers/payments.js';
import { serveOnSandbox } from '../helpers/served.js';

const chain = useSandbox({ isolate: false });
const logger = createLogger({ level: 'silent', format: 'json' });
const KEY = 'resource-server-key-0123456789abcdef';
const servers: Listening[] = [];
after(() => Promise.all(servers.map((s) => s.close())));

async function serve(options: { apiKeys?: string[]; failuresPerMinute?: number; relayer: number; trustedProxies?: string[] }) {
  const { facilitator } = await chain.facilitator([options.relayer]);
  const { trustedProxies, ...access } = options;
  const app = createApp(logger, trustedProxies ? { trustedProxies } : {});
  app.route('/', facilitatorRoutes(facilitator, { bodyLimitBytes: 65536, logger, ...access }));
  const server = await listen(app, { host: '127.0.0.1', port: 0 });
  servers.push(server);
  const post = async (path: string, body: unknown, headers: Record<string, string> = {}) => {
    const init = { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) };
    const res = await fetch(`${server.url}${path}`, init);
    return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> };
  };
  return { url: server.url, post };
}

const payment = (payer: number, amount = 2_000n, payee = 0) =>
  v2Request({ payer: chain.sandbox.accounts.payers[payer]!, payTo: chain.sandbox.accounts.payees[payee]!.address, amount });

describe('who may use the facilitator API', () => {
  test('with API keys, /verify and /settle want one (401 without), /supported stays open, and remoteFacilitator sends one', async () => {
    const { url, post } = await serve({ apiKeys: ['another-resource-server-key-0123456789', KEY], relayer: 0 });
    const body = await payment(1);
    const wrong = 'Bearer wrong-key-wrong-key-wrong-key-wrong';
    const attempts: Record<string, string>[] = [{}, { authorization: wrong }, { authorization: KEY }];
    for (const headers of attempts) {
      const denied = await post('/verify', body, headers);
      assert.deepEqual([denied.status, denied.body.error], [401, 'unauthorized'], JSON.stringify(headers));
      assert.match(String(denied.body.message), /Authorization: Bearer/);
    }
    assert.equal((await post('/settle', body)).status, 401);
    assert.equal((await fetch(`${url}/supported`)).status, 200);

    const store = await openSqliteStore({ path: chain.dbPath() });
    const local = { journal: store.journal, network: networks.local };
    await assert.rejects(remoteFacilitator({ url, ...local }).verify(body), FacilitatorUnavailableError);
    const remote = remoteFacilitator({ url, apiKey: KEY, ...local });
    assert.equal((await remote.verify(body)).isValid, true);
    const before = await chain.balanceOf(chain.sandbox.accounts.payees[0]!.address);
    assert.equal((await remote.settle(body, purposes.topup(chain.sandbox.accounts.payees[0]!.address, 'key:k1'))).success, true);
    await store.close();
    assert.equal(await chain.balanceOf(chain.sandbox.accounts.payees[0]!.address), before + 2_000n);
  });

  test('a resource server sending its key is not throttled for its clients’ refused payments; an address without one is', async () => {
    const { post } = await serve({ apiKeys: [KEY], failuresPerMinute: 2, relayer: 2 });
    const keyed = { authorization: `Bearer ${KEY}` };
    const zero = await payment(3, 0n);
    for (let i = 0; i < 4; i++) assert.deepEqual([(await post('/verify', zero, keyed)).body.isValid], [false]);
    for (let i = 0; i < 2; i++) assert.equal((await post('/verify', zero)).status, 401);
    assert.equal((await post('/verify', zero)).status, 429);
    assert.equal((await post('/verify', await payment(3), keyed)).body.isValid, true);
  });

  test('an address whose requests keep failing gets 429 and Retry-After, whatever X-Forwarded-For says; /supported is open', async () => {
    const { url, post } = await serve({ failuresPerMinute: 3, relayer: 1 });
    const zero = await payment(2, 0n);
    for (let i = 0; i < 3; i++) {
      const refused = await post('/verify', zero, { 'x-forwarded-for': `203.0.113.${i}` });
      assert.deepEqual([refused.status, refused.body.isValid], [200, false]);
    }
    const good = await payment(2);
    const throttled = await post('/settle', good, { 'x-forwarded-for': '198.51.100.7' });
    assert.deepEqual([throttled.status, throttled.body.error], [429, 'too_many_failures']);
    const wait = Number(throttled.headers.get('retry-after'));
    assert.ok(wait >= 1 && wait <= 60, `retry-after ${wait}`);
    assert.equal((await fetch(`${url}/supported`)).status, 200);
  });

  test('an IPv6 caller is throttled for its whole /64: rotating its addresses does not reset its failures', async () => {
    const { post } = await serve({ failuresPerMinute: 3, relayer: 1, trustedProxies: ['loopback'] });
    const zero = await payment(2, 0n);
    for (let i = 0; i < 3; i++) assert.equal((await post('/verify', zero, { 'x-forwarded-for': `2001:db8:5:5::${i + 1}` })).status, 200);
    const throttled = await post('/verify', await payment(2), { 'x-forwarded-for': '2001:db8:5:5:ffff::1' });
    assert.deepEqual([throttled.status, throttled.body.error], [429, 'too_many_failures']);
    assert.equal(
      (await post('/verify', await payment(2), { 'x-forwarded-for': '2001:db8:5:6::1' })).body.isValid,
      true,
      'the next /64 is another caller',
    );
  });

  test('requests sent at once from one address are answered no more than the limit before 429: the rest do not all pass before one fails', async () => {
    const { post } = await serve({ failuresPerMinute: 3, relayer: 1 });
    const payTo = chain.sandbox.accounts.payees[0]!.address;
    const empty = () => {
      const privateKey = generatePrivateKey();
      return v2Request({ payer: { ...privateKeyToAccount(privateKey), privateKey, label: 'empty' }, payTo, amount: 2_000n });
    };
    const junk = await Promise.all(Array.from({ length: 12 }, empty));
    const statuses = await Promise.all(junk.map(async (body) => (await post('/verify', body)).status));
    assert.ok(statuses.filter((status) => status === 200).length <= 3, `${statuses}`);
    assert.ok(
      statuses.every((status) => status === 200 || status === 429),
      `${statuses}`,
    );
  });

  test('an attempt under way counts as a failure until it ends, then only if it failed; a caller held back by those alone waits a second', () => {
    let now = 1_000_000;
    const throttle = failureThrottle({ limit: 2, now: () => now });
    const first = throttle.begin('a');
    assert.equal(throttle.wait('a'), 0);
    const second = throttle.begin('a');
    assert.equal(throttle.wait('a'), 1, 'two under way: the limit');
    first();
    first();
    assert.equal(throttle.wait('a'), 0, 'ended (once, however often it is called) and did not fail');
    throttle.failed('a');
    second();
    assert.equal(throttle.wait('a'), 0, 'one failure');
    const third = throttle.begin('a');
    assert.equal(throttle.wait('a'), 1);
    throttle.failed('a');
    third();
    assert.equal(throttle.wait('a'), 60, 'two failures: the rest of the minute');
    now += 60_000;
    assert.equal(throttle.wait('a'), 0);
    const off = failureThrottle({ limit: 0 });
    off.begin('a');
    assert.equal(off.wait('a'), 0, 'limit 0: off');
  });

  test('the failure throttle counts per caller per minute, lets a caller in when its minute ends, keeps at most maxCallers', () => {
    let now = 1_000_000;
    const throttle = failureThrottle({ limit: 2, maxCallers: 2, now: () => now });
    throttle.failed('a');
    assert.equal(throttle.wait('a'), 0);
    throttle.failed('a');
    assert.equal(throttle.wait('a'), 60);
    assert.equal(throttle.wait('b'), 0, 'per caller');
    now += 59_500;
    assert.equal(throttle.wait('a'), 1);
    now += 500;
    assert.equal(throttle.wait('a'), 0, 'a new window');
    throttle.failed('a');
    throttle.failed('a');
    throttle.failed('b');
    throttle.failed('c'); // the third caller drops the oldest window, a's
    assert.equal(throttle.wait('a'), 0);
    throttle.failed('c');
    assert.equal(throttle.wait('c'), 60);
    assert.equal(failureThrottle({ limit: 0 }).wait('anyone'), 0, 'limit 0: off');
  });

  test('the gateway’s /facilitator settles only for its own payees, from the minimum amount up, with a key when keys are set', async () => {
    const own = chain.sandbox.accounts.payees[0]!.address;
    const served = await serveOnSandbox(chain, { secrets: { facilitatorKeys: [KEY] }, overrides: { credits: { payTo: own } }, relayer: 2 });
    servers.push(served.gateway);
    const settle = async (body: unknown, key: string | null = KEY) =>
      served.api('POST', '/facilitator/settle', { body, ...(key ? { key } : {}) });
    const txs = await chain.relayerTxCount();
    assert.equal((await settle(await payment(3), null)).status, 401);
    assert.equal((await settle(await payment(3, 5_000n, 1))).body.errorReason, 'invalid_exact_evm_recipient_not_allowed');
    assert.equal((await settle(await payment(3, 999n))).body.errorReason, 'invalid_exact_evm_amount_below_minimum');
    assert.equal(await chain.relayerTxCount(), txs, 'refusals send nothing');
    const paid = await settle(await payment(3, 1_000n));
    assert.deepEqual([paid.status, paid.body.success], [200, true]);
    const treasury = chain.sandbox.accounts.treasury.address;
    const toTreasury = await v2Request({ payer: chain.sandbox.accounts.payers[3]!, payTo: treasury, amount: 1_000n });
    assert.equal((await settle(toTreasury)).body.success, true, 'the treasury is the gateway’s own payee too');
  });
});
