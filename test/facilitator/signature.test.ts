import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Hex, concat, hashTypedData, numberToHex, parseSignature, toHex } from 'viem';
import { transferWithAuthorizationTypes, usdcDomain } from '../../src/chain/eip3009.js';
import { networks } from '../../src/chain/networks.js';
import { sandboxAccounts } from '../../src/chain/sandbox/accounts.js';
import { toIntent } from '../../src/facilitator/intent.js';
import { authorizationDigest, classifySignature } from '../../src/facilitator/signature.js';
import { v2Request } from '../helpers/payments.js';

const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const { payers, payees } = sandboxAccounts({ payers: 1, relayers: 0, payees: 1 });
const rules = { network: networks.local, assets: [networks.local.usdc], expiryMarginSeconds: 6 };

async function intentWith(mutate: (signature: Hex) => Hex) {
  const body = await v2Request({ payer: payers[0]!, payTo: payees[0]!.address, amount: 1n });
  body.paymentPayload.payload.signature = mutate(body.paymentPayload.payload.signature);
  const result = toIntent(body, rules, Math.floor(Date.now() / 1000));
  assert.ok(result.ok);
  return result.intent;
}

const classify = async (mutate: (s: Hex) => Hex) => {
  const intent = await intentWith(mutate);
  return classifySignature(intent, authorizationDigest(intent, 8453));
};

test('a payer’s own 65-byte signature is an EOA signature', async () => {
  assert.equal(await classify((s) => s), 'eoa');
});

test('the high-s twin of a valid signature is refused, as FiatToken refuses it', async () => {
  const highS = await classify((s) => {
    const { r, s: low, v } = parseSignature(s);
    return concat([r, numberToHex(N - BigInt(low), { size: 32 }), toHex(v === 27n ? 28 : 27, { size: 1 })]);
  });
  assert.equal(highS, 'contract');
});

test('v of 0/1 instead of 27/28 is refused, as FiatToken refuses it', async () => {
  const v01 = await classify((s) => {
    const { r, s: low, yParity } = parseSignature(s);
    return concat([r, low, toHex(yParity, { size: 1 })]);
  });
  assert.equal(v01, 'contract');
});

test('an ERC-6492 wrapper is recognised', async () => {
  assert.equal(await classify((s) => `${s}${'6492'.repeat(16)}` as Hex), 'erc6492');
});

test('the digest is exactly viem’s hashTypedData of the authorization', async () => {
  const intent = await intentWith((s) => s);
  const expected = hashTypedData({
    domain: usdcDomain(networks.base),
    types: transferWithAuthorizationTypes,
    primaryType: 'TransferWithAuthorization',
    message: intent.authorization,
  });
  assert.equal(authorizationDigest(intent, 8453), expected);
  assert.equal(authorizationDigest(intent, 8453), expected, 'and again from the cached domain');
});
