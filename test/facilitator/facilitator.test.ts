import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Hex } from 'viem';
import { networks } from '../../src/chain/networks.js';
import { purposes } from '../../src/facilitator/purposes.js';
import { useSandbox } from '../helpers/chain.js';
import { type FacilitatorApiOptions, facilitatorApi, samplePayment } from '../helpers/facilitator-api.js';
import { type PaymentOptions, v1Request, v2Request } from '../helpers/payments.js';

const chain = useSandbox();

const setup = (options: FacilitatorApiOptions = {}) => facilitatorApi(chain, options);
const payment = (overrides: Partial<PaymentOptions> = {}) => samplePayment(chain, overrides);

describe('facilitator API', () => {
  test('/supported lists exact on Base for v1 and v2 and the relayer signers', async () => {
    const { app } = await setup();
    const body = (await (await app.request('/supported')).json()) as Record<string, unknown>;
    assert.deepEqual(body.kinds, [
      { x402Version: 2, scheme: 'exact', network: 'eip155:8453' },
      { x402Version: 1, scheme: 'exact', network: 'base' },
    ]);
    assert.deepEqual(body.signers, { 'eip155:*': chain.sandbox.accounts.relayers.map((r) => r.address) });
  });

  test('v2: verify then settle moves the USDC once and journals it', async () => {
    const { post, store } = await setup();
    const p = payment();
    const body = await v2Request(p);
    const verdict = await post('/verify', body);
    assert.deepEqual(verdict, { status: 200, body: { isValid: true, payer: p.payer.address } });
    const before = await chain.balanceOf(p.payTo);
    const settled = await post('/settle', body);
    assert.equal(settled.status, 200);
    assert.equal(settled.body.success, true);
    assert.equal(settled.body.network, 'eip155:8453');
    assert.equal(settled.body.payer, p.payer.address);
    assert.match(String(settled.body.transaction), /^0x[0-9a-f]{64}$/);
    assert.equal(await chain.balanceOf(p.payTo), before + p.amount);
    const record = await store.journal.get({
      chainId: 8453,
      asset: networks.base.usdc.address.toLowerCase() as Hex,
      payer: p.payer.address.toLowerCase() as Hex,
      nonce: body.paymentPayload.payload.authorization.nonce.toLowerCase() as Hex,
    });
    assert.equal(record?.state, 'settled');
    assert.equal(record?.txHash, settled.body.transaction);
  });

  test('v1: the same flow answers with the v1 network name', async () => {
    const { post } = await setup();
    const body = await v1Request(payment());
    assert.equal((await post('/verify', body)).body.isValid, true);
    const settled = await post('/settle', body);
    assert.equal(settled.body.success, true);
    assert.equal(settled.body.network, 'base');
  });

  test('a replayed payment settles once: the replay is refused, and verify reports the nonce used', async () => {
    const { post } = await setup();
    const p = payment();
    const body = await v2Request(p);
    const first = await post('/settle', body);
    const txs = await chain.relayerTxCount();
    const again = await post('/settle', body);
    assert.deepEqual([first.body.success, again.body.success], [true, false]);
    assert.equal(again.body.errorReason, 'invalid_exact_evm_nonce_already_used');
    const verdict = await post('/verify', body);
    assert.equal(verdict.body.isValid, false);
    assert.equal(verdict.body.invalidReason, 'invalid_exact_evm_nonce_already_used');
    assert.equal(await chain.relayerTxCount(), txs);
  });

  test('reserve holds a payable payment once, and leaves nothing behind for one the chain refuses', async () => {
    const { store, facilitator } = await setup();
    const good = await v2Request(payment());
    const holds = await Promise.all(Array.from({ length: 5 }, () => facilitator.reserve(good, purposes.call('main', 'h'))));
    assert.equal(holds.filter((h) => h.isValid).length, 1);
    const broke = await v2Request(payment({ amount: 20_000_000_000n }));
    const refused = await facilitator.reserve(broke, purposes.call('main', 'h'));
    assert.equal(refused.isValid, false);
    assert.equal((refused as { invalidReason: string }).invalidReason, 'invalid_exact_evm_insufficient_balance');
    const unfinished = await store.journal.unfinished();
    assert.deepEqual(
      unfinished.map((r) => r.amount),
      [10_000n],
    );
  });

  test('50 concurrent /settle of one payment: one transaction, one transfer, exactly one success, the rest nonce_already_used', async () => {
    const { post } = await setup();
    const p = payment({ amount: 777n });
    const body = await v2Request(p);
    const txsBefore = await chain.relayerTxCount();
    const balanceBefore = await chain.balanceOf(p.payTo);
    const answers = await Promise.all(Array.from({ length: 50 }, () => post('/settle', body)));
    assert.ok(answers.every((a) => a.status === 200));
    assert.equal(answers.filter((a) => a.body.success === true).length, 1);
    for (const a of answers.filter((x) => x.body.success !== true)) {
      assert.equal(a.body.errorReason, 'invalid_exact_evm_nonce_already_used');
    }
    assert.equal(await chain.relayerTxCount(), txsBefore + 1);
    assert.equal(await chain.balanceOf(p.payTo), balanceBefore + 777n);
  });

  test('concurrent settles of different payments use several relayers without nonce clashes', async () => {
    const { post } = await setup();
    const bodies = await Promise.all(chain.sandbox.accounts.payers.slice(0, 8).map((payer) => v2Request(payment({ payer, amount: 5n }))));
    const answers = await Promise.all(bodies.map((b) => post('/settle', b)));
    assert.deepEqual(
      answers.map((a) => a.body.success),
      bodies.map(() => true),
    );
    assert.equal(new Set(answers.map((a) => a.body.transaction)).size, 8);
  });
});

describe('bad input and adversaries: specific answers, no 5xx, nothing moves', () => {
  async function rejected(
    mutate: (body: Awaited<ReturnType<typeof v2Request>>) => unknown,
    reason: string,
    options: Partial<PaymentOptions> = {},
  ) {
    const { post } = await setup();
    const p = payment(options);
    const body = mutate(await v2Request(p)) ?? (await v2Request(p));
    const txs = await chain.relayerTxCount();
    const before = await chain.balanceOf(p.payTo);
    const verdict = await post('/verify', body);
    assert.equal(verdict.status, 200);
    assert.equal(verdict.body.isValid, false, JSON.stringify(verdict.body));
    assert.equal(verdict.body.invalidReason, reason, JSON.stringify(verdict.body));
    const settled = await post('/settle', body);
    assert.equal(settled.status, 200);
    assert.equal(settled.body.success, false);
    assert.equal(settled.body.errorReason, reason);
    assert.equal(settled.body.transaction, '');
    assert.equal(await chain.relayerTxCount(), txs, 'no gas was spent');
    assert.equal(await chain.balanceOf(p.payTo), before);
  }

  test('malformed bodies are 400 naming the field', async () => {
    const { post } = await setup();
    const garbage = await post('/verify', '{"x402Version": 2, ');
    assert.deepEqual([garbage.status, garbage.body.error], [400, 'invalid_json']);
    const body = await v2Request(payment());
    const missing = await post('/settle', { ...body, paymentRequirements: { ...body.paymentRequirements, payTo: undefined } });
    assert.equal(missing.status, 400);
    assert.match(String(missing.body.message), /^paymentRequirements\.payTo: /);
    const wrongType = await post('/verify', { ...body, paymentRequirements: { ...body.paymentRequirements, amount: 10000 } });
    assert.equal(wrongType.status, 400);
    assert.match(String(wrongType.body.message), /^paymentRequirements\.amount: /);
    const huge = structuredClone(body);
    huge.paymentPayload.payload.authorization.value = '9'.repeat(78);
    const overflow = await post('/verify', huge);
    assert.equal(overflow.body.invalidReason, 'invalid_payload');
    assert.match(String(overflow.body.invalidMessage), /authorization\.value: expected at most 2\^256 - 1/);
    const version = await post('/verify', { ...body, x402Version: 3 });
    assert.equal(version.status, 400);
    assert.match(String(version.body.message), /^x402Version/);
  });

  test('a field missing inside paymentPayload.payload is a 200 invalid_payload answer from verify and settle, naming it', async () => {
    const { post } = await setup();
    const body = await v2Request(payment());
    delete (body.paymentPayload.payload.authorization as Partial<typeof body.paymentPayload.payload.authorization>).nonce;
    const verdict = await post('/verify', body);
    assert.deepEqual([verdict.status, verdict.body.isValid, verdict.body.invalidReason], [200, false, 'invalid_payload']);
    assert.match(String(verdict.body.invalidMessage), /^paymentPayload\.payload\.authorization\.nonce: /);
    const settled = await post('/settle', body);
    assert.deepEqual([settled.status, settled.body.success, settled.body.errorReason], [200, false, 'invalid_payload']);
  });

  test('oversized bodies are refused with 413', async () => {
    const { post } = await setup();
    const big = await post('/verify', JSON.stringify({ x402Version: 2, padding: 'x'.repeat(100_000) }));
    assert.equal(big.status, 413);
    assert.equal(big.body.error, 'body_too_large');
  });

  test('a malformed signature inside the payload is invalid_payload, naming the field', () =>
    rejected((b) => {
      (b.paymentPayload.payload as { signature: string }).signature = 'not hex';
      return b;
    }, 'invalid_payload'));

  test('a signature for another chain id is not the payer’s', () =>
    rejected(() => undefined, 'invalid_exact_evm_signature', { chainId: 1 }));

  test('a signature for Base Sepolia’s domain name ("USDC") is not the payer’s', () =>
    rejected(() => undefined, 'invalid_exact_evm_signature', { domainName: 'USDC' }));

  test('requirements naming the wrong EIP-712 domain name are refused before any signature work', () =>
    rejected((b) => {
      b.paymentRequirements.extra = { name: 'USDC', version: '2' };
      b.paymentPayload.accepted = b.paymentRequirements;
      return b;
    }, 'invalid_exact_evm_token_name_mismatch'));

  test('value tampered after signing (requirements tampered to match)', () =>
    rejected((b) => {
      b.paymentPayload.payload.authorization.value = '1';
      b.paymentRequirements.amount = '1';
      b.paymentPayload.accepted = b.paymentRequirements;
      return b;
    }, 'invalid_exact_evm_signature'));

  test('recipient tampered after signing', () =>
    rejected((b) => {
      const other = chain.sandbox.accounts.payees[1]!.address;
      b.paymentPayload.payload.authorization.to = other;
      b.paymentRequirements.payTo = other;
      b.paymentPayload.accepted = b.paymentRequirements;
      return b;
    }, 'invalid_exact_evm_signature'));

  test('nonce tampered after signing', () =>
    rejected((b) => {
      b.paymentPayload.payload.authorization.nonce = `0x${'ab'.repeat(32)}`;
      return b;
    }, 'invalid_exact_evm_signature'));

  test('paying someone other than payTo', () =>
    rejected((b) => {
      b.paymentRequirements.payTo = chain.sandbox.accounts.payees[1]!.address;
      b.paymentPayload.accepted = b.paymentRequirements;
      return b;
    }, 'invalid_exact_evm_recipient_mismatch'));

  test('paying less than asked', () =>
    rejected((b) => {
      b.paymentRequirements.amount = '20000';
      b.paymentPayload.accepted = b.paymentRequirements;
      return b;
    }, 'invalid_exact_evm_payload_authorization_value_mismatch'));

  test('accepted requirements that differ from the server’s', () =>
    rejected((b) => {
      b.paymentPayload.accepted = { ...b.paymentRequirements, amount: '1' };
      return b;
    }, 'invalid_exact_evm_requirements_mismatch'));

  const now = () => BigInt(Math.floor(Date.now() / 1000));
  test('an expired authorization', () =>
    rejected(() => undefined, 'invalid_exact_evm_payload_authorization_valid_before', { validBefore: now() - 1n }));

  test('an authorization that expires before it could be mined', () =>
    rejected(() => undefined, 'invalid_exact_evm_payload_authorization_valid_before', { validBefore: now() + 2n }));

  test('a not-yet-valid authorization', () =>
    rejected(() => undefined, 'invalid_exact_evm_payload_authorization_valid_after', { validAfter: now() + 600n }));

  test('more than the payer holds', () => rejected(() => undefined, 'invalid_exact_evm_insufficient_balance', { amount: 20_000_000_000n }));

  test('a token that is not on the allow-list: no gas is spent on it', () =>
    rejected((b) => {
      const fake = '0x000000000000000000000000000000000000dEaD';
      b.paymentRequirements.asset = fake;
      b.paymentPayload.accepted = b.paymentRequirements;
      return b;
    }, 'invalid_exact_evm_asset_not_allowed'));

  test('another network', () =>
    rejected((b) => {
      b.paymentRequirements.network = 'eip155:84532';
      b.paymentPayload.accepted = b.paymentRequirements;
      return b;
    }, 'invalid_network'));

  test('another scheme', () =>
    rejected((b) => {
      b.paymentRequirements.scheme = 'upto';
      b.paymentPayload.accepted = b.paymentRequirements;
      return b;
    }, 'invalid_scheme'));

  test('an ERC-6492 counterfactual-wallet signature is refused with a reason', async () => {
    const { post } = await setup();
    const body = await v2Request(payment());
    body.paymentPayload.payload.signature = `${body.paymentPayload.payload.signature}${'6492'.repeat(16)}` as Hex;
    const verdict = await post('/verify', body);
    assert.equal(verdict.body.invalidReason, 'invalid_exact_evm_signature');
    assert.match(String(verdict.body.invalidMessage), /ERC-6492/);
  });

  test('the chain’s RPC down is the facilitator’s fault: 503 with retryable, not a 500', async () => {
    const { post } = await setup({ rpcUrl: 'http://127.0.0.1:9' });
    const res = await post('/verify', await v2Request(payment()));
    assert.equal(res.status, 503);
    assert.deepEqual([res.body.error, res.body.retryable], ['facilitator_unavailable', true]);
  });
});
