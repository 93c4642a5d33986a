import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Address, getAddress, pad } from 'viem';
import { transferWithAuthorizationTypes, usdcDomain } from '../../src/chain/eip3009.js';
import { networks } from '../../src/chain/networks.js';
import { sandboxAccounts } from '../../src/chain/sandbox/accounts.js';
import { erc1271WalletDeployedBytecode } from '../fixtures/erc1271-wallet.js';
import { purposes } from '../../src/facilitator/purposes.js';
import { remoteFacilitator } from '../../src/facilitator/remote.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { useSandbox } from '../helpers/chain.js';
import { v2Request } from '../helpers/payments.js';

const chain = useSandbox();
const WALLET: Address = getAddress('0x00000000000000000000000000000000001271aa');
const [owner, stranger] = sandboxAccounts({ payers: 0, relayers: 0, payees: 2 }).payees;

/** A v2 payment from the wallet: the authorization names the wallet, its owner signs. */
async function walletPayment(signer: typeof owner, payTo: Address, amount: bigint) {
  const body = await v2Request({ payer: chain.sandbox.accounts.payers[9]!, payTo, amount });
  const authorization = { ...body.paymentPayload.payload.authorization, from: WALLET };
  body.paymentPayload.payload.authorization = authorization;
  body.paymentPayload.payload.signature = await signer!.signTypedData({
    domain: usdcDomain(networks.base),
    types: transferWithAuthorizationTypes,
    primaryType: 'TransferWithAuthorization',
    message: {
      ...authorization,
      value: BigInt(authorization.value),
      validAfter: BigInt(authorization.validAfter),
      validBefore: BigInt(authorization.validBefore),
    },
  });
  return body;
}

test('a smart wallet (ERC-1271) pays with its owner’s 65-byte signature: verified by the wallet itself, settled on chain', async () => {
  await chain.rpc('anvil_setCode', [WALLET, erc1271WalletDeployedBytecode]);
  await chain.rpc('anvil_setStorageAt', [WALLET, pad('0x0'), pad(owner!.address)]);
  const { facilitator } = await chain.facilitator([3]);
  // Fund the wallet the x402 way: a payer pays it.
  const funding = await v2Request({ payer: chain.sandbox.accounts.payers[9]!, payTo: WALLET, amount: 50_000n });
  assert.equal((await facilitator.settle(funding, purposes.api)).success, true);

  const payee = chain.sandbox.accounts.payees[0]!.address;
  const forged = await walletPayment(stranger, payee, 20_000n);
  const refused = await facilitator.verify(forged, purposes.api);
  assert.equal(refused.isValid, false);
  assert.equal(!refused.isValid && refused.invalidReason, 'invalid_exact_evm_signature');

  const body = await walletPayment(owner, payee, 20_000n);
  assert.deepEqual(await facilitator.verify(body, purposes.api), { isValid: true, payer: WALLET });
  const before = await chain.balanceOf(payee);
  const settled = await facilitator.settle(body, purposes.api);
  assert.equal(settled.success, true, JSON.stringify(settled));
  assert.equal(await chain.balanceOf(payee), before + 20_000n);
  assert.equal(await chain.balanceOf(WALLET), 30_000n);
});

test('a payer is authenticated by the signature alone, at the price it is signed for: an EOA’s locally, a smart wallet’s by the wallet, anyone else’s never', async () => {
  await chain.rpc('anvil_setCode', [WALLET, erc1271WalletDeployedBytecode]);
  await chain.rpc('anvil_setStorageAt', [WALLET, pad('0x0'), pad(owner!.address)]);
  const { facilitator } = await chain.facilitator([3]);
  const store = await openSqliteStore({ path: chain.dbPath() });
  const local = { journal: store.journal, network: networks.local };
  // Nothing listens there: what it authenticates, it authenticates without asking the remote.
  const remote = remoteFacilitator({ url: 'http://127.0.0.1:9', ...local, client: chain.client });
  const blind = remoteFacilitator({ url: 'http://127.0.0.1:9', ...local });
  const payee = chain.sandbox.accounts.payees[0]!.address;
  const payer = chain.sandbox.accounts.payers[9]!;
  // Signed for 0.02 (the payer's tier price, say) where the list price asks 0.01: the signer is known all the same.
  const atListPrice = <T extends { paymentRequirements: object }>(body: T) => ({
    ...body,
    paymentRequirements: { ...body.paymentRequirements, amount: '10000' },
  });
  const eoa = atListPrice(await v2Request({ payer, payTo: payee, amount: 20_000n }));
  const wallet = atListPrice(await walletPayment(owner, payee, 20_000n));
  const forgedEoa = await v2Request({ payer, payTo: payee, amount: 20_000n });
  forgedEoa.paymentPayload.payload.signature = (
    await v2Request({ payer: chain.sandbox.accounts.payers[8]!, payTo: payee, amount: 20_000n })
  ).paymentPayload.payload.signature;
  const forgedWallet = await walletPayment(stranger, payee, 20_000n);
  const reasonOf = (verdict: { isValid: boolean; invalidReason?: string }) => (verdict.isValid ? 'valid' : verdict.invalidReason);
  const call = purposes.call('weather', 'a-call');

  for (const port of [facilitator, remote]) {
    assert.deepEqual(await port.authenticate(eoa, call), { isValid: true, payer: payer.address });
    assert.deepEqual(await port.authenticate(wallet, call), { isValid: true, payer: WALLET });
    assert.equal(reasonOf(await port.authenticate(forgedEoa, call)), 'invalid_exact_evm_signature');
    assert.equal(reasonOf(await port.authenticate(forgedWallet, call)), 'invalid_exact_evm_signature');
  }
  assert.equal(reasonOf(await facilitator.verify(eoa)), 'invalid_exact_evm_requirements_mismatch', 'the price is judged later, not here');
  assert.deepEqual(await blind.authenticate(eoa, call), { isValid: true, payer: payer.address }, 'an EOA needs no chain');
  assert.equal(
    reasonOf(await blind.authenticate(wallet, call)),
    'invalid_exact_evm_signature',
    'a wallet nobody can ask is not taken on its word',
  );
  await store.close();
});

test('a payment the journal already holds is not authenticated, for any purpose, with either port: only its payer’s signature learns it is used', async () => {
  const { store, facilitator } = await chain.facilitator([3]);
  const remote = remoteFacilitator({ url: 'http://127.0.0.1:9', journal: store.journal, network: networks.local });
  const payee = chain.sandbox.accounts.payees[0]!.address;
  const payer = chain.sandbox.accounts.payers[9]!;
  const reasonOf = (verdict: { isValid: boolean; invalidReason?: string }) => (verdict.isValid ? 'valid' : verdict.invalidReason);
  const [mine, another] = [purposes.call('weather', 'mine'), purposes.call('weather', 'another')];
  const payment = await v2Request({ payer, payTo: payee, amount: 10_000n });
  const forged = structuredClone(payment);
  forged.paymentPayload.payload.signature = (
    await v2Request({ payer: chain.sandbox.accounts.payers[8]!, payTo: payee, amount: 10_000n })
  ).paymentPayload.payload.signature;
  assert.deepEqual(await facilitator.authenticate(payment, mine), { isValid: true, payer: payer.address }, 'unused, it is the payer’s');

  const held = await facilitator.reserve(payment, mine);
  assert.ok(held.isValid, JSON.stringify(held));
  for (const port of [facilitator, remote]) {
    for (const purpose of [mine, another, purposes.topup(payee, 'key:k1')]) {
      assert.equal(reasonOf(await port.authenticate(payment, purpose)), 'invalid_exact_evm_nonce_already_used', purpose);
    }
    assert.equal(reasonOf(await port.authenticate(forged, another)), 'invalid_exact_evm_signature', 'a forged copy learns nothing');
  }
  await facilitator.release(held.key, 'the tool failed');
  for (const port of [facilitator, remote]) {
    assert.equal(reasonOf(await port.authenticate(payment, mine)), 'call_failed', 'its own call: why it failed');
    assert.equal(reasonOf(await port.authenticate(payment, another)), 'invalid_exact_evm_nonce_already_used');
  }
  await store.close();
});
