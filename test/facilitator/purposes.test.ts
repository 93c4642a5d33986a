import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type Hex, decodeFunctionData } from 'viem';
import { usdcAbi } from '../../contracts-abi/usdc.js';
import { BASE_USDC, networks } from '../../src/chain/networks.js';
import { purposes } from '../../src/facilitator/purposes.js';
import { createApp } from '../../src/http/app.js';
import { creditsRoutes } from '../../src/http/credits-routes.js';
import { createCredits } from '../../src/rails/credits/credits.js';
import { encodeHeader } from '../../src/x402/codec.js';
import { useSandbox } from '../helpers/chain.js';
import { type FacilitatorApiOptions, facilitatorApi, samplePayment } from '../helpers/facilitator-api.js';
import { type PaymentOptions, keyOf, v2Request } from '../helpers/payments.js';
import { eventually } from '../helpers/served.js';

const chain = useSandbox();
const NONCE_USED = 'invalid_exact_evm_nonce_already_used';
const CALL = purposes.call('weather', 'c0ffee');

const setup = (options: FacilitatorApiOptions = {}) => facilitatorApi(chain, options);
const payment = (overrides: Partial<PaymentOptions> = {}) => samplePayment(chain, overrides);

describe('a payment buys one thing', () => {
  test('a payment that paid for a tool call is refused by POST /credits/topup, which credits nothing and sends nothing', async () => {
    const { store, facilitator, logger } = await setup();
    const payTo = chain.sandbox.accounts.payees[0]!.address;
    const body = await v2Request(payment({ payTo, amount: 1_000_000n }));
    assert.equal((await facilitator.reserve(body, CALL)).isValid, true);
    assert.equal((await facilitator.settle(body, CALL)).success, true);

    const app = createApp(logger);
    const credits = createCredits({ store, tokenSecret: 'a-token-secret-of-at-least-32-characters' });
    const topup = { payTo, min: 1_000_000n, max: 100_000_000n };
    app.route('/credits', creditsRoutes({ credits, store, facilitator, network: networks.local, topup }));
    const txs = await chain.relayerTxCount();
    const balance = await chain.balanceOf(payTo);
    const headers = { 'payment-signature': encodeHeader(body.paymentPayload) };
    const res = await app.request('/credits/topup?usd=1', { method: 'POST', headers });
    assert.equal(res.status, 402);
    assert.match(Buffer.from(res.headers.get('payment-required') ?? '', 'base64').toString(), new RegExp(NONCE_USED));
    assert.deepEqual(await store.credits.keys(), [], 'no key was created or credited');
    assert.equal(await chain.relayerTxCount(), txs);
    assert.equal(await chain.balanceOf(payTo), balance);
  });

  test('a payment the gateway holds for a call is not the facilitator API’s: /verify and /settle call it used, send nothing', async () => {
    const { store, facilitator, post } = await setup();
    const p = payment();
    const body = await v2Request(p);
    assert.equal((await facilitator.reserve(body, CALL)).isValid, true);
    const txs = await chain.relayerTxCount();
    const before = await chain.balanceOf(p.payTo);

    const verdict = await post('/verify', body);
    assert.deepEqual([verdict.body.isValid, verdict.body.invalidReason], [false, NONCE_USED]);
    const settled = await post('/settle', body);
    const { success, errorReason, transaction } = settled.body;
    assert.deepEqual([settled.status, success, errorReason, transaction], [200, false, NONCE_USED, '']);
    assert.equal(await chain.relayerTxCount(), txs, 'nothing broadcast by the API');
    assert.deepEqual(
      (({ state, purpose }) => ({ state, purpose }))((await store.journal.get(keyOf(body)))!),
      { state: 'verified', purpose: CALL },
      'the hold is still the call’s',
    );

    const receipt = await facilitator.settle(body, CALL);
    assert.equal(receipt.success, true, 'the hold still settles for its call');
    assert.equal(await chain.balanceOf(p.payTo), before + p.amount);
  });
});

describe('a top-up credits what its payment paid', () => {
  test('after a top-up answered settlement_pending, a copy naming its payer and nonce for 100× the amount, forged, credits nothing; the real retry gets its key', async () => {
    const { store, facilitator, logger } = await setup({ receiptTimeoutMs: 300 });
    const payTo = chain.sandbox.accounts.payees[0]!.address;
    const app = createApp(logger);
    const credits = createCredits({ store, tokenSecret: 'a-token-secret-of-at-least-32-characters' });
    const topup = { payTo, min: 1_000_000n, max: 100_000_000n };
    app.route('/credits', creditsRoutes({ credits, store, facilitator, network: networks.local, topup }));
    const paid = await v2Request(payment({ payTo, amount: 1_000_000n, maxTimeoutSeconds: 600 }));
    const post = (usd: string, body: typeof paid) =>
      app.request(`/credits/topup?usd=${usd}`, { method: 'POST', headers: { 'payment-signature': encodeHeader(body.paymentPayload) } });
    await chain.rpc('evm_setAutomine', [false]);
    try {
      assert.equal((await post('1', paid)).status, 503, 'settlement_pending: retry with the same payment');
    } finally {
      await chain.rpc('evm_setAutomine', [true]);
    }
    await chain.rpc('evm_mine');
    await eventually(
      () => store.journal.get(keyOf(paid)),
      (r) => r?.state === 'settled',
      'the watcher finishes the row',
    );

    // Anyone reads the payer and nonce on chain; the signature here is no one's.
    const { nonce } = paid.paymentPayload.payload.authorization;
    const forged = await v2Request(payment({ payTo, amount: 100_000_000n, nonce: nonce as Hex, maxTimeoutSeconds: 600 }));
    forged.paymentPayload.payload.signature = `0x${'11'.repeat(65)}` as Hex;
    const stolen = await post('100', forged);
    assert.equal(stolen.status, 402);
    assert.match(Buffer.from(stolen.headers.get('payment-required') ?? '', 'base64').toString(), new RegExp(NONCE_USED));
    assert.deepEqual(await store.credits.keys(), [], 'no key was created or credited');

    const retry = await post('1', paid);
    assert.equal(retry.status, 201);
    assert.equal(((await retry.json()) as { balance: string }).balance, '1000000');
    await facilitator.drain();
  });
});

describe('a top-up credits whoever asked for it, not whoever copies its payment', () => {
  /** The payment as anyone reads it from the settlement's transaction: calldata holds the authorization and its signature. */
  async function copiedFromChain(txHash: Hex, like: Awaited<ReturnType<typeof v2Request>>) {
    const tx = await chain.client.getTransaction({ hash: txHash });
    const { args } = decodeFunctionData({ abi: usdcAbi, data: tx.input });
    const [from, to, value, validAfter, validBefore, nonce, signature] = args as unknown as [Hex, Hex, bigint, bigint, bigint, Hex, Hex];
    const authorization = { from, to, value: `${value}`, validAfter: `${validAfter}`, validBefore: `${validBefore}`, nonce };
    return { ...like.paymentPayload, payload: { signature, authorization } };
  }

  /** A top-up of 1 USD asked with `headers` (made once the app is up), answered settlement_pending; then mined. */
  async function pendingTopup(headersFor: (credits: ReturnType<typeof createCredits>) => Promise<Record<string, string>>) {
    const { store, facilitator, logger } = await setup({ receiptTimeoutMs: 300 });
    const payTo = chain.sandbox.accounts.payees[0]!.address;
    const app = createApp(logger);
    const credits = createCredits({ store, tokenSecret: 'a-token-secret-of-at-least-32-characters' });
    const topup = { payTo, min: 1_000_000n, max: 100_000_000n };
    app.route('/credits', creditsRoutes({ credits, store, facilitator, network: networks.local, topup }));
    const headers = await headersFor(credits);
    const paid = await v2Request(payment({ payTo, amount: 1_000_000n, maxTimeoutSeconds: 600 }));
    const post = (payload: unknown, extra: Record<string, string> = {}) =>
      app.request('/credits/topup?usd=1', { method: 'POST', headers: { 'payment-signature': encodeHeader(payload), ...extra } });
    await chain.rpc('evm_setAutomine', [false]);
    try {
      assert.equal((await post(paid.paymentPayload, headers)).status, 503, 'settlement_pending: retry with the same payment');
    } finally {
      await chain.rpc('evm_setAutomine', [true]);
    }
    const { txHash } = (await store.journal.get(keyOf(paid)))!;
    const copy = await copiedFromChain(txHash!, paid);
    await chain.rpc('evm_mine');
    await eventually(
      () => store.journal.get(keyOf(paid)),
      (r) => r?.state === 'settled',
      'the watcher finishes the row',
    );
    return { store, credits, facilitator, headers, copy, post };
  }

  test('a key’s top-up answered settlement_pending, copied from its transaction by another key or by no key, credits neither; the key’s retry collects it', async () => {
    let victim = '';
    const { store, credits, facilitator, headers, copy, post } = await pendingTopup(async (credits) => {
      const created = await credits.createKey({ name: 'victim' });
      victim = created.key.id;
      return { authorization: `Bearer ${created.secret}` };
    });
    const thief = await credits.createKey({ name: 'thief' });
    const stolen = await post(copy, { authorization: `Bearer ${thief.secret}` });
    assert.equal(stolen.status, 402);
    assert.match(Buffer.from(stolen.headers.get('payment-required') ?? '', 'base64').toString(), new RegExp(NONCE_USED));
    const anonymous = await post(copy);
    assert.equal(anonymous.status, 402, 'no key made for the copier');
    assert.equal((await store.credits.key(thief.key.id))?.balance, 0n);
    assert.equal((await store.credits.keys()).length, 2, 'no key was created');

    const retry = await post(copy, headers);
    assert.equal(retry.status, 201);
    const credited = (await retry.json()) as { keyId: string; balance: string };
    assert.deepEqual([credited.keyId, credited.balance], [victim, '1000000']);
    await facilitator.drain();
  });

  test('a new key’s top-up answered settlement_pending, copied from its transaction by another caller, makes them no key; the payer’s retry gets it', async () => {
    const { store, facilitator, headers, copy, post } = await pendingTopup(async () => ({ 'idempotency-key': 'topup-7f3a' }));
    const stolen = await post(copy, { 'idempotency-key': 'thief' });
    assert.equal(stolen.status, 402);
    assert.equal((await post(copy)).status, 402);
    assert.deepEqual(await store.credits.keys(), [], 'no key was created or credited');

    const retry = await post(copy, headers);
    assert.equal(retry.status, 201);
    const made = (await retry.json()) as { key: string; balance: string };
    assert.equal(made.balance, '1000000');
    assert.match(made.key, /^tp_/);
    await facilitator.drain();
  });
});

describe('a settled top-up is collected whenever its payer comes back', () => {
  test('a top-up settled before a crash kept its credit is credited to its key by a retry after its authorization expired; a new expired payment still is not taken', async () => {
    let skew = 0;
    const { store, facilitator, logger } = await setup({ now: () => Math.floor(Date.now() / 1000) + skew });
    const payTo = chain.sandbox.accounts.payees[0]!.address;
    const app = createApp(logger);
    const credits = createCredits({ store, tokenSecret: 'a-token-secret-of-at-least-32-characters' });
    const topup = { payTo, min: 1_000_000n, max: 100_000_000n };
    app.route('/credits', creditsRoutes({ credits, store, facilitator, network: networks.local, topup }));
    const post = (body: Awaited<ReturnType<typeof v2Request>>, secret: string) =>
      app.request('/credits/topup?usd=1', {
        method: 'POST',
        headers: { 'payment-signature': encodeHeader(body.paymentPayload), authorization: `Bearer ${secret}` },
      });
    const { key, secret } = await credits.createKey({ name: 'payer' });
    const paid = await v2Request(payment({ payTo, amount: 1_000_000n, maxTimeoutSeconds: 120 }));
    // What POST /credits/topup did before the instance died: settled for this key, nothing credited.
    assert.equal((await facilitator.settle(paid, purposes.topup(payTo, `key:${key.id}`))).success, true);
    skew = 3_600;

    const thief = await credits.createKey({ name: 'thief' });
    assert.equal((await post(paid, thief.secret)).status, 402, 'late or not, another key gets nothing');
    const txs = await chain.relayerTxCount();
    const retry = await post(paid, secret);
    assert.equal(retry.status, 201);
    assert.equal(((await retry.json()) as { balance: string }).balance, '1000000');
    assert.equal((await post(paid, secret)).status, 200, 'credited once');
    assert.equal((await store.credits.key(key.id))?.balance, 1_000_000n);

    const fresh = await v2Request(payment({ payTo, amount: 1_000_000n, maxTimeoutSeconds: 120 }));
    const expired = await post(fresh, secret);
    assert.equal(expired.status, 402);
    assert.match(Buffer.from(expired.headers.get('payment-required') ?? '', 'base64').toString(), /valid_before/);
    assert.equal(await chain.relayerTxCount(), txs, 'nothing sent late');
    assert.equal(await store.journal.get(keyOf(fresh)), undefined);
  });

  test('a call’s hold whose authorization expired while its tool ran is refused as expired, not answered from the journal', async () => {
    let skew = 0;
    const { facilitator } = await setup({ now: () => Math.floor(Date.now() / 1000) + skew });
    const body = await v2Request(payment({ maxTimeoutSeconds: 120 }));
    assert.equal((await facilitator.reserve(body, CALL)).isValid, true);
    skew = 3_600;
    const txs = await chain.relayerTxCount();
    const late = await facilitator.settle(body, CALL);
    assert.deepEqual([late.success, late.errorReason], [false, 'invalid_exact_evm_payload_authorization_valid_before']);
    assert.equal(await chain.relayerTxCount(), txs);
  });
});

describe('one success per authorization at the facilitator API', () => {
  test('a /settle repeated after its success is nonce_already_used naming the transaction, and sends nothing', async () => {
    const { post } = await setup();
    const body = await v2Request(payment());
    const first = await post('/settle', body);
    assert.equal(first.body.success, true);
    const txs = await chain.relayerTxCount();
    const again = await post('/settle', body);
    assert.deepEqual([again.body.success, again.body.errorReason, again.body.transaction], [false, NONCE_USED, '']);
    assert.match(String(again.body.errorMessage), new RegExp(String(first.body.transaction)));
    assert.equal(await chain.relayerTxCount(), txs);
  });

  test('after settlement_pending the identical retry gets the final outcome once; an altered copy and a second retry do not', async () => {
    const { store, facilitator, post } = await setup({ receiptTimeoutMs: 300 });
    const p = payment();
    const body = await v2Request(p);
    const before = await chain.balanceOf(p.payTo);
    const txs = await chain.relayerTxCount();
    await chain.rpc('evm_setAutomine', [false]);
    let hash: string;
    try {
      const first = await post('/settle', body);
      assert.equal(first.body.errorReason, 'settlement_pending');
      hash = String(first.body.transaction);
      assert.equal((await store.journal.get(keyOf(body)))?.pendingAnswered, true, 'journalled before the answer');
      const stillPending = await post('/settle', body);
      assert.deepEqual([stillPending.body.errorReason, stillPending.body.transaction], ['settlement_pending', hash]);
      const forged = structuredClone(body);
      forged.paymentPayload.payload.signature = `0x${'11'.repeat(65)}` as Hex;
      const altered = await post('/settle', forged);
      assert.deepEqual([altered.body.success, altered.body.errorReason], [false, NONCE_USED]);
    } finally {
      await chain.rpc('evm_setAutomine', [true]);
    }
    await chain.rpc('evm_mine');
    await eventually(
      () => store.journal.get(keyOf(body)),
      (r) => r?.state === 'settled',
      'the watcher finishes the row',
    );

    const retries = await Promise.all([post('/settle', body), post('/settle', body)]);
    assert.deepEqual(retries.map((r) => r.body.success).sort(), [false, true], 'the final outcome, once');
    assert.equal(retries.find((r) => r.body.success)!.body.transaction, hash);
    assert.equal(retries.find((r) => !r.body.success)!.body.errorReason, NONCE_USED);
    const late = await post('/settle', body);
    assert.deepEqual([late.body.success, late.body.errorReason], [false, NONCE_USED]);
    assert.equal(await chain.relayerTxCount(), txs + 1);
    assert.equal(await chain.balanceOf(p.payTo), before + p.amount);
    await facilitator.drain();
  });
});

describe('redelivery only to the journalled payment', () => {
  test('a forged signature with the same payer and nonce gets no kept result; the real payment of that call does', async () => {
    const { facilitator } = await setup();
    const body = await v2Request(payment());
    const held = await facilitator.reserve(body, CALL);
    assert.ok(held.isValid);
    await facilitator.keepResult(held.key, { call: CALL, result: '{"content":[{"type":"text","text":"paid output"}]}' });
    const receipt = await facilitator.settle(body, CALL);
    assert.equal(receipt.success, true);

    const forged = structuredClone(body);
    forged.paymentPayload.payload.signature = `0x${'11'.repeat(65)}` as Hex;
    assert.equal(await facilitator.redeliver(forged, CALL), undefined);
    const stretched = structuredClone(body);
    stretched.paymentPayload.payload.authorization.validBefore = String(BigInt(body.paymentPayload.payload.authorization.validBefore) - 1n);
    assert.equal(await facilitator.redeliver(stretched, CALL), undefined, 'every authorization field must be the row’s');
    assert.equal(await facilitator.redeliver(body, purposes.call('weather', 'another-call')), undefined, 'another call');
    assert.deepEqual(await facilitator.redeliver(body, CALL), { result: '{"content":[{"type":"text","text":"paid output"}]}', receipt });
  });

  test('a result kept for a caller goes back only to a retry from that caller: the payment and call alone get nothing', async () => {
    const { facilitator } = await setup();
    const body = await v2Request(payment());
    const held = await facilitator.reserve(body, CALL);
    assert.ok(held.isValid);
    await facilitator.keepResult(held.key, { call: CALL, result: '{"content":[]}', caller: 'session-a' });
    const receipt = await facilitator.settle(body, CALL);
    assert.equal(receipt.success, true);
    assert.equal(await facilitator.redeliver(body, CALL), undefined, 'no caller shown');
    assert.equal(await facilitator.redeliver(body, CALL, 'session-b'), undefined, 'another caller');
    assert.deepEqual(await facilitator.redeliver(body, CALL, 'session-a'), { result: '{"content":[]}', receipt });
  });
});

describe('the journal never contradicts the chain', () => {
  test('a release racing a broadcast settlement moves nothing: the payment settles, and the journal says what the chain says', async () => {
    const released: boolean[] = [];
    const { store, facilitator, post } = await setup({
      // The other path has claimed and journalled its transaction when the gateway's release arrives.
      journalFor: (journal, facilitator) => ({
        ...journal,
        async recordTransaction(key, tx) {
          await journal.recordTransaction(key, tx);
          released.push(await facilitator().release(key, 'the upstream failed meanwhile'));
        },
      }),
    });
    const p = payment();
    const body = await v2Request(p);
    const before = await chain.balanceOf(p.payTo);
    assert.equal((await facilitator.reserve(body, CALL)).isValid, true);
    const receipt = await facilitator.settle(body, CALL);
    assert.equal(receipt.success, true);
    assert.deepEqual(released, [false], 'a claimed payment is not a hold');

    const record = await store.journal.get(keyOf(body));
    assert.deepEqual([record?.state, record?.txHash], ['settled', receipt.transaction]);
    const mined = await chain.client.getTransactionReceipt({ hash: receipt.transaction as Hex });
    assert.equal(mined.status, 'success');
    const { from, nonce } = body.paymentPayload.payload.authorization;
    const state = { address: BASE_USDC, abi: usdcAbi, functionName: 'authorizationState', args: [from, nonce as Hex] } as const;
    const used = await chain.client.readContract(state);
    assert.equal(used, true);
    assert.equal(await chain.balanceOf(p.payTo), before + p.amount);
    assert.equal(await facilitator.release(keyOf(body), 'late'), false, 'a settled payment is not a hold either');
    const api = await post('/settle', body);
    assert.deepEqual([api.status, api.body.errorReason], [200, NONCE_USED], 'answered from the row, never a 500');
  });
});

describe('turnpike spends gas only for its own business', () => {
  test('a zero-value authorization is refused by verify, reserve and settle, and nothing is sent', async () => {
    const { facilitator, post } = await setup();
    const body = await v2Request(payment({ amount: 0n }));
    const txs = await chain.relayerTxCount();
    const verdict = await post('/verify', body);
    assert.deepEqual([verdict.body.isValid, verdict.body.invalidReason], [false, 'invalid_exact_evm_authorization_value']);
    const held = await facilitator.reserve(body, CALL);
    assert.deepEqual([held.isValid, (held as { invalidReason?: string }).invalidReason], [false, 'invalid_exact_evm_authorization_value']);
    const settled = await post('/settle', body);
    const { success, errorReason, transaction } = settled.body;
    assert.deepEqual([success, errorReason, transaction], [false, 'invalid_exact_evm_authorization_value', '']);
    assert.equal(await chain.relayerTxCount(), txs);
  });

  test('the facilitator API settles only for its payees, from the minimum amount up; the gateway’s own calls are not bound', async () => {
    const own = chain.sandbox.accounts.payees[0]!.address;
    const stranger = chain.sandbox.accounts.payees[1]!.address;
    const { facilitator, post } = await setup({ payees: async () => [own.toLowerCase()], minimumAmount: 1_000n });
    const txs = await chain.relayerTxCount();
    const elsewhere = await v2Request(payment({ payTo: stranger, amount: 5_000n }));
    for (const path of ['/verify', '/settle'] as const) {
      const answer = (await post(path, elsewhere)).body;
      assert.equal(answer.invalidReason ?? answer.errorReason, 'invalid_exact_evm_recipient_not_allowed', path);
    }
    const small = await v2Request(payment({ payTo: own, amount: 999n }));
    for (const path of ['/verify', '/settle'] as const) {
      const answer = (await post(path, small)).body;
      assert.equal(answer.invalidReason ?? answer.errorReason, 'invalid_exact_evm_amount_below_minimum', path);
    }
    assert.equal(await chain.relayerTxCount(), txs, 'no transaction for a refusal');
    assert.equal((await post('/settle', await v2Request(payment({ payTo: own, amount: 1_000n })))).body.success, true);
    const call = await v2Request(payment({ payTo: own, amount: 10n }));
    assert.equal((await facilitator.reserve(call, CALL)).isValid, true);
    assert.equal((await facilitator.settle(call, CALL)).success, true);
  });
});
