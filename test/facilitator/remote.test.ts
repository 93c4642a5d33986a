import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { openPayments } from '../../src/app/payments.js';
import { networks } from '../../src/chain/networks.js';
import { ConfigError } from '../../src/config/errors.js';
import { loadConfig } from '../../src/config/load.js';
import { FacilitatorUnavailableError } from '../../src/facilitator/errors.js';
import { purposes } from '../../src/facilitator/purposes.js';
import { cdpFacilitator, remoteFacilitator } from '../../src/facilitator/remote.js';
import { createLogger } from '../../src/log/logger.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import type { Store } from '../../src/store/store.js';
import { useSandbox } from '../helpers/chain.js';
import { facilitatorOverHttp } from '../helpers/facilitator-api.js';
import { keyOf, v2Request } from '../helpers/payments.js';

const chain = useSandbox({ isolate: false });
const CALL = purposes.call('weather', 'hash');

/** A turnpike facilitator over HTTP with its own relayer: files' facilitators never share a nonce sequence. */
const remoteOnSandbox = (relayer: number) =>
  facilitatorOverHttp(chain, { relayerKeys: [chain.sandbox.accounts.relayers[relayer]!.privateKey] });

const payee = () => chain.sandbox.accounts.payees[1]!.address;
const payment = (payer: number, amount = 20_000n) => v2Request({ payer: chain.sandbox.accounts.payers[payer]!, payTo: payee(), amount });

describe('remoteFacilitator: the gateway’s port over another facilitator’s /verify and /settle', () => {
  let remote: Awaited<ReturnType<typeof remoteOnSandbox>>;
  let store: Store;
  let port: ReturnType<typeof remoteFacilitator>;
  before(async () => {
    remote = await remoteOnSandbox(0);
    store = await openSqliteStore({ path: chain.dbPath() });
    port = remoteFacilitator({ url: remote.url, journal: store.journal, network: networks.local, client: chain.client });
  });
  after(async () => {
    await remote.close();
    await store.close();
  });

  test('of 5 concurrent holds of one payment one is taken, the remote verifies and settles once, the journal says settled', async () => {
    const body = await payment(1);
    const [verifies, settles] = [remote.count('/verify'), remote.count('/settle')];
    const holds = await Promise.all(Array.from({ length: 5 }, () => port.reserve(body, CALL)));
    assert.equal(holds.filter((h) => h.isValid).length, 1);
    assert.ok(holds.filter((h) => !h.isValid).every((h) => !h.isValid && h.invalidReason === 'invalid_exact_evm_nonce_already_used'));
    assert.equal(remote.count('/verify'), verifies + 1);
    const before = await chain.balanceOf(payee());
    const receipt = await port.settle(body, CALL);
    assert.equal(receipt.success, true, JSON.stringify(receipt));
    assert.equal(await chain.balanceOf(payee()), before + 20_000n);
    const row = await store.journal.get(keyOf(body));
    assert.deepEqual([row?.state, row?.txHash], ['settled', receipt.transaction]);
    // The owner asking again gets its receipt from the journal; nothing more reaches the remote.
    assert.deepEqual(await port.settle(body, CALL), receipt);
    assert.equal(remote.count('/settle'), settles + 1);
    const other = await port.settle(body, purposes.topup(payee(), 'key:k1'));
    assert.equal(other.errorReason, 'invalid_exact_evm_nonce_already_used');
  });

  test('a kept result is given back for the same payment once settled, never to a forged copy or another call', async () => {
    const body = await payment(2);
    const held = await port.reserve(body, CALL);
    assert.ok(held.isValid);
    await port.keepResult(held.key, { call: CALL, result: '{"content":[]}' });
    assert.equal(await port.redeliver(body, CALL), undefined, 'nothing before the settlement');
    const receipt = await port.settle(body, CALL);
    assert.deepEqual(await port.redeliver(body, CALL), { result: '{"content":[]}', receipt });
    assert.equal(await port.redeliver(body, purposes.call('weather', 'other')), undefined);
    const forged = structuredClone(body);
    forged.paymentPayload.payload.signature = `0x${'11'.repeat(65)}`;
    assert.equal(await port.redeliver(forged, CALL), undefined);
  });

  test('a result kept for a caller goes back only to a retry from that caller: the payment and call alone get nothing', async () => {
    const body = await payment(9);
    const held = await port.reserve(body, CALL);
    assert.ok(held.isValid);
    await port.keepResult(held.key, { call: CALL, result: '{"content":[]}', caller: 'session-a' });
    const receipt = await port.settle(body, CALL);
    assert.equal(receipt.success, true, JSON.stringify(receipt));
    assert.equal(await port.redeliver(body, CALL), undefined, 'no caller shown');
    assert.equal(await port.redeliver(body, CALL, 'session-b'), undefined, 'another caller');
    assert.deepEqual(await port.redeliver(body, CALL, 'session-a'), { result: '{"content":[]}', receipt });
  });

  test('a top-up settled before a crash kept its credit answers its retry after the authorization expired from the journal; an expired new payment is never sent to the remote', async () => {
    const body = await payment(3);
    const topup = purposes.topup(payee(), 'key:k1');
    const receipt = await port.settle(body, topup);
    assert.equal(receipt.success, true, JSON.stringify(receipt));
    const later = () => Math.floor(Date.now() / 1000) + 3_600;
    const late = remoteFacilitator({ url: remote.url, journal: store.journal, network: networks.local, client: chain.client, now: later });
    const settles = remote.count('/settle');
    assert.deepEqual(await late.settle(body, topup), receipt);
    assert.equal((await late.settle(body, purposes.topup(payee(), 'key:k2'))).errorReason, 'invalid_exact_evm_nonce_already_used');
    const fresh = await payment(3);
    assert.equal((await late.settle(fresh, topup)).errorReason, 'invalid_exact_evm_payload_authorization_valid_before');
    assert.equal(remote.count('/settle'), settles, 'the remote was asked nothing');
    assert.equal(await store.journal.get(keyOf(fresh)), undefined);
  });

  test('a payment the remote refuses is given back: nothing stays held for it', async () => {
    const body = await v2Request({ payer: chain.sandbox.accounts.payees[0]!, payTo: payee(), amount: 1_000n }); // holds no USDC
    const refused = await port.reserve(body, CALL);
    assert.equal(refused.isValid, false);
    assert.equal(await store.journal.get(keyOf(body)), undefined);
  });

  test('a failed call’s hold ends without asking the remote to settle', async () => {
    const body = await payment(3);
    const held = await port.reserve(body, CALL);
    assert.ok(held.isValid);
    const settles = remote.count('/settle');
    assert.equal(await port.release(held.key, 'upstream answered 500'), true);
    const receipt = await port.settle(body, CALL);
    assert.equal(receipt.success, false);
    assert.equal(remote.count('/settle'), settles);
  });

  test('an answer that never came withholds the outcome; the same payment again asks once more and gets it', async () => {
    const body = await payment(4);
    const held = await port.reserve(body, CALL);
    assert.ok(held.isValid);
    await port.keepResult(held.key, { call: CALL, result: '{"content":[{"type":"text","text":"paid"}]}' });
    remote.dropNextSettle('before');
    await assert.rejects(port.settle(body, CALL), FacilitatorUnavailableError);
    await port.releaseHold(held.key); // what the rail does: a claim is not a hold, it stays
    assert.equal((await store.journal.get(keyOf(body)))?.state, 'submitting');
    assert.equal((await port.reserve(body, CALL)).isValid, false, 'never held twice');
    const again = await port.redeliver(body, CALL);
    assert.equal(again?.receipt.success, true);
    assert.equal((await store.journal.get(keyOf(body)))?.state, 'settled');
  });

  test('an answer lost after the remote settled: "already used" is checked on chain, never taken for a failure', async () => {
    const body = await payment(5);
    const held = await port.reserve(body, CALL);
    assert.ok(held.isValid);
    await port.keepResult(held.key, { call: CALL, result: '{"content":[]}' });
    const before = await chain.balanceOf(payee());
    remote.dropNextSettle('after');
    await assert.rejects(port.settle(body, CALL), FacilitatorUnavailableError);
    assert.equal(await chain.balanceOf(payee()), before + 20_000n);
    // The remote answers a second /settle "already used": without the chain that confirms nothing.
    const blind = remoteFacilitator({ url: remote.url, journal: store.journal, network: networks.local });
    assert.equal(await blind.redeliver(body, CALL), undefined);
    assert.equal((await store.journal.get(keyOf(body)))?.state, 'submitting');
    // The token's AuthorizationUsed log and the Transfer of exactly this payment do.
    const again = await port.redeliver(body, CALL);
    assert.equal(again?.receipt.success, true);
    const row = await store.journal.get(keyOf(body));
    assert.deepEqual([row?.state, row?.txHash], ['settled', again?.receipt.transaction]);
    assert.equal(await chain.balanceOf(payee()), before + 20_000n);
  });

  test('an unreachable facilitator is FacilitatorUnavailableError, and the hold is given back', async () => {
    const dead = remoteFacilitator({ url: 'http://127.0.0.1:9', timeoutMs: 2000, journal: store.journal, network: networks.local });
    const body = await payment(6, 1_000n);
    await assert.rejects(dead.reserve(body, CALL), FacilitatorUnavailableError);
    assert.equal(await store.journal.get(keyOf(body)), undefined);
  });

  test('a stopped instance’s holds are ended by reconcile; its claims stay for the payer’s retry', async () => {
    const body = await payment(7, 1_000n);
    const held = await port.reserve(body, CALL);
    assert.ok(held.isValid);
    assert.ok((await port.reconcile()) >= 1);
    assert.equal((await store.journal.get(keyOf(body)))?.errorReason, 'call_abandoned');
  });
});

describe('cdpFacilitator (Coinbase’s service is not reachable offline: a local server stands in front of a turnpike facilitator)', () => {
  test('without CDP_API_KEY_ID / CDP_API_KEY_SECRET, opening mode cdp says which variables to set', async () => {
    const config = loadConfig({ env: {}, overrides: { facilitator: { mode: 'cdp' }, store: { url: `sqlite:${chain.dbPath()}` } } });
    const connection = {
      network: networks.local,
      shownRpcUrl: chain.sandbox.rpcUrl,
      client: chain.client,
      relayerKeys: [],
      multicall3: true,
    };
    const logger = createLogger({ level: 'silent', format: 'json' });
    await assert.rejects(
      openPayments({ config, secrets: {}, chain: { ...connection, close: async () => {} }, logger }),
      (e: unknown) => e instanceof ConfigError && /CDP_API_KEY_ID/.test(e.format()),
    );
  });

  test('by default it calls CDP’s x402 endpoint; every call carries a JWT for that endpoint, signed with the key', async (t) => {
    const remote = await remoteOnSandbox(1);
    const store = await openSqliteStore({ path: chain.dbPath() });
    t.after(async () => {
      await remote.close();
      await store.close();
    });
    const pem = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const secrets = { cdpApiKeyId: 'organizations/test/apiKeys/test', cdpApiKeySecret: pem };
    const hosted = cdpFacilitator(secrets, { journal: store.journal, network: networks.local });
    assert.equal(hosted.url, 'https://api.cdp.coinbase.com/platform/v2/x402');
    const port = cdpFacilitator(secrets, { url: `${remote.url}/platform/v2/x402`, journal: store.journal, network: networks.local });
    const body = await payment(8);
    const held = await port.reserve(body, CALL);
    assert.ok(held.isValid, JSON.stringify(held));
    assert.equal((await port.settle(body, CALL)).success, true);
    assert.deepEqual(
      remote.seen.map((s) => s.path),
      ['/platform/v2/x402/verify', '/platform/v2/x402/settle'],
    );
    for (const [i, { headers }] of remote.seen.entries()) {
      const jwt = /^Bearer ([\w-]+)\.([\w-]+)\.([\w-]+)$/.exec(headers.get('authorization') ?? '');
      assert.ok(jwt, `expected a bearer JWT, got ${headers.get('authorization')}`);
      const claims = JSON.parse(Buffer.from(jwt[2]!, 'base64url').toString()) as { sub: string; uris: string[] };
      assert.equal(claims.sub, 'organizations/test/apiKeys/test');
      assert.deepEqual(claims.uris, [`POST api.cdp.coinbase.com/platform/v2/x402/${i === 0 ? 'verify' : 'settle'}`]);
      assert.match(headers.get('correlation-context') ?? '', /source=x402/);
    }
  });
});
