import { type Address, type Hex, toHex } from 'viem';
import { transferWithAuthorizationTypes, usdcDomain } from '../../src/chain/eip3009.js';
import { networks } from '../../src/chain/networks.js';
import type { DemoAccount } from '../../src/chain/sandbox/accounts.js';
import type { PaymentKey } from '../../src/store/journal/journal.js';

export type PaymentOptions = {
  payer: DemoAccount;
  payTo: Address;
  amount: bigint;
  maxTimeoutSeconds?: number;
  validAfter?: bigint;
  validBefore?: bigint;
  nonce?: Hex;
  domainName?: string;
  chainId?: number;
};

const now = () => BigInt(Math.floor(Date.now() / 1000));

/** Signs an EIP-3009 authorization the way an x402 client does. */
export async function signAuthorization(o: PaymentOptions) {
  const authorization = {
    from: o.payer.address,
    to: o.payTo,
    value: o.amount,
    validAfter: o.validAfter ?? now() - 600n,
    validBefore: o.validBefore ?? now() + BigInt(o.maxTimeoutSeconds ?? 60),
    nonce: o.nonce ?? toHex(crypto.getRandomValues(new Uint8Array(32))),
  };
  const signature = await o.payer.signTypedData({
    domain: { ...usdcDomain(networks.base), name: o.domainName ?? 'USD Coin', chainId: o.chainId ?? 8453 },
    types: transferWithAuthorizationTypes,
    primaryType: 'TransferWithAuthorization',
    message: authorization,
  });
  return {
    signature,
    authorization: {
      from: authorization.from,
      to: authorization.to,
      value: authorization.value.toString(),
      validAfter: authorization.validAfter.toString(),
      validBefore: authorization.validBefore.toString(),
      nonce: authorization.nonce,
    },
  };
}

/** A v2 `/verify` or `/settle` body for a Base USDC payment. */
export async function v2Request(o: PaymentOptions) {
  const requirements = {
    scheme: 'exact',
    network: 'eip155:8453',
    asset: networks.base.usdc.address,
    amount: o.amount.toString(),
    payTo: o.payTo,
    maxTimeoutSeconds: o.maxTimeoutSeconds ?? 60,
    extra: { name: 'USD Coin', version: '2' },
  };
  return {
    x402Version: 2 as const,
    paymentPayload: {
      x402Version: 2 as const,
      resource: { url: 'http://127.0.0.1/tool' },
      accepted: requirements,
      payload: await signAuthorization(o),
    },
    paymentRequirements: requirements,
  };
}

/** The same payment in x402 v1's shapes. */
export async function v1Request(o: PaymentOptions) {
  const requirements = {
    scheme: 'exact',
    network: 'base',
    maxAmountRequired: o.amount.toString(),
    resource: 'http://127.0.0.1/tool',
    description: 'a tool',
    mimeType: 'application/json',
    payTo: o.payTo,
    maxTimeoutSeconds: o.maxTimeoutSeconds ?? 60,
    asset: networks.base.usdc.address,
    extra: { name: 'USD Coin', version: '2' },
  };
  return {
    x402Version: 1 as const,
    paymentPayload: { x402Version: 1 as const, scheme: 'exact', network: 'base', payload: await signAuthorization(o) },
    paymentRequirements: requirements,
  };
}

/** The journal key of a request's payment (chain, asset, payer, nonce, lower-cased). */
export function keyOf(request: { paymentPayload: { payload: { authorization: { from: string; nonce: string } } } }): PaymentKey {
  const { from, nonce } = request.paymentPayload.payload.authorization;
  const asset = networks.base.usdc.address.toLowerCase() as Address;
  return { chainId: 8453, asset, payer: from.toLowerCase() as Address, nonce: nonce.toLowerCase() as Hex };
}
