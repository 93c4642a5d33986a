import { type Address, type Hex, getAddress, isAddressEqual } from 'viem';
import type { Network } from '../chain/networks.js';
import type { KeptResult, NewPayment, PaymentJournal, PaymentKey, PaymentRecord } from '../store/journal/journal.js';
import { type Reason, reasons } from '../x402/reasons.js';
import { type FacilitatorRequest, exactEvmPayloadSchema } from '../x402/schemas.js';
import { purposes } from './purposes.js';

/** A token the facilitator settles, with the EIP-712 domain its signatures must use. */
export type AllowedAsset = { address: Address; name: string; version: string };

/** A payment request reduced to what the checks and the chain need, numbers as bigints. */
export type PaymentIntent = {
  x402Version: 1 | 2;
  /** The network id the request used, echoed back in responses. */
  networkId: string;
  asset: AllowedAsset;
  payTo: Address;
  amount: bigint;
  maxTimeoutSeconds: number;
  signature: Hex;
  authorization: { from: Address; to: Address; value: bigint; validAfter: bigint; validBefore: bigint; nonce: Hex };
  key: PaymentKey;
};

/**
 * Why a payment is refused. `costly`: judged with a round trip someone pays for (a chain read, a
 * remote facilitator's answer), not by the checks that need nothing: what a caller's refusals
 * cost, and what the gateway throttles (see `refusalThrottle`).
 *
 * @example { reason: reasons.insufficientBalance, message: 'payer holds 0, payment needs 1000', payer, costly: true }
 */
export type Rejection = { reason: Reason; message: string; payer?: Address; costly?: true };
export type IntentResult = { ok: true; intent: PaymentIntent } | ({ ok: false } & Rejection);

export type IntentRules = {
  network: Network;
  assets: readonly AllowedAsset[];
  /** An authorization must stay valid at least this long after we look at it (settlement time). */
  expiryMarginSeconds: number;
  /**
   * When set, an authorization may stay valid at most `maxTimeoutSeconds` plus this many seconds
   * from now (`facilitator.maxValidityOverTimeoutSeconds`); unset, any window is taken, as the
   * reference facilitator takes it (replay is the nonce's job: the Go client signs for an hour).
   */
  validityOverTimeoutSeconds?: number;
};

/**
 * The rules payments on `network` are checked by, in-process or before a remote facilitator is
 * asked: the reference's margin (the transaction has a few seconds to be mined before expiry), any
 * validity window unless `validityOverTimeoutSeconds` bounds it; by default only the network's USDC.
 */
export function intentRules(
  network: Network,
  assets: readonly AllowedAsset[] = [network.usdc],
  validityOverTimeoutSeconds?: number,
): IntentRules {
  return { network, assets, expiryMarginSeconds: 6, validityOverTimeoutSeconds };
}

const INT64_MAX = (1n << 63n) - 1n;
const reject = (reason: Reason, message: string, payer?: Address): IntentResult => ({ ok: false, reason, message, payer });

/**
 * Every check that needs no I/O, cheapest first: scheme, network, requirement consistency,
 * asset allow-list and EIP-712 domain, recipient, amount (never zero: no gas for nothing), and
 * the validity window (valid now and long enough to be mined; a bound on its length only when
 * configured, since the reference has none). `price: 'signed'` takes the amount the authorization
 * is signed for as the price (for judging its signer before the payer's own price is known, see
 * `authenticatePayer`): every other check is the same.
 *
 * @example
 * const result = toIntent(request, rules, Math.floor(Date.now() / 1000));
 * if (!result.ok) return { isValid: false, invalidReason: result.reason };
 */
export function toIntent(
  request: FacilitatorRequest,
  rules: IntentRules,
  now: number,
  price: 'required' | 'signed' = 'required',
): IntentResult {
  const { network } = rules;
  const required = request.paymentRequirements;
  const paid = request.x402Version === 2 ? request.paymentPayload.accepted : request.paymentPayload;

  if (required.scheme !== 'exact' || paid.scheme !== 'exact') {
    return reject(reasons.invalidScheme, `only the "exact" scheme is supported, got "${paid.scheme}"`);
  }
  const networkId = request.x402Version === 2 ? network.caip2 : network.x402v1;
  if (required.network !== networkId) {
    return reject(reasons.invalidNetwork, `this facilitator settles on ${networkId}, not ${required.network}`);
  }
  if (paid.network !== required.network) {
    return reject(reasons.networkMismatch, `payment is for ${paid.network}, requirements are for ${required.network}`);
  }

  const parsed = exactEvmPayloadSchema.safeParse(request.paymentPayload.payload);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return reject(reasons.invalidPayload, `paymentPayload.payload.${issue.path.join('.')}: ${issue.message}`);
  }
  const { authorization: auth, signature } = parsed.data;
  const payer = getAddress(auth.from);

  if (request.x402Version === 2) {
    const accepted = request.paymentPayload.accepted;
    const fields = price === 'signed' ? (['asset', 'payTo'] as const) : (['asset', 'payTo', 'amount'] as const);
    const differs = fields.find((field) =>
      field === 'amount' ? accepted.amount !== required.amount : accepted[field].toLowerCase() !== required[field].toLowerCase(),
    );
    if (differs) return reject(reasons.requirementsMismatch, `accepted.${differs} differs from the requirements`, payer);
  }

  const asset = rules.assets.find((a) => a.address.toLowerCase() === required.asset.toLowerCase());
  if (!asset) return reject(reasons.assetNotAllowed, `asset ${required.asset} is not one this facilitator settles`, payer);
  const extra = required.extra ?? {};
  if (typeof extra.name !== 'string' || typeof extra.version !== 'string') {
    return reject(reasons.missingDomain, 'requirements.extra must carry the token’s EIP-712 name and version', payer);
  }
  if (extra.name !== asset.name) {
    return reject(reasons.tokenNameMismatch, `EIP-712 name of ${asset.address} is "${asset.name}", not "${extra.name}"`, payer);
  }
  if (extra.version !== asset.version) {
    return reject(reasons.tokenVersionMismatch, `EIP-712 version of ${asset.address} is "${asset.version}"`, payer);
  }

  if (!/^0x[0-9a-fA-F]{40}$/.test(required.payTo) || !isAddressEqual(auth.to as Address, required.payTo as Address)) {
    return reject(reasons.recipientMismatch, `authorization pays ${auth.to}, requirements say ${required.payTo}`, payer);
  }
  const value = BigInt(auth.value);
  const requiredAmount = request.x402Version === 2 ? request.paymentRequirements.amount : request.paymentRequirements.maxAmountRequired;
  const amount = price === 'signed' ? value : BigInt(requiredAmount);
  if (value !== amount) {
    // Exact, like the reference: an overpayment is as likely a client bug as a gift.
    return reject(reasons.valueMismatch, `authorization is for ${value}, requirements ask ${amount}`, payer);
  }
  if (amount > INT64_MAX) return reject(reasons.invalidPayload, 'amount is out of range', payer);
  if (amount === 0n) return reject(reasons.authorizationValue, 'a payment of 0 moves nothing: it is never settled', payer);

  const validAfter = BigInt(auth.validAfter);
  const validBefore = BigInt(auth.validBefore);
  const t = BigInt(now);
  // EIP-3009 takes any uint256; the journal keeps 64-bit integers, and no clock reaches 2^63 s.
  if (validBefore > INT64_MAX) return reject(reasons.invalidPayload, 'validBefore is out of range (over 2^63 - 1)', payer);
  // The token wants `block.timestamp > validAfter`: one valid from this very second reverts in a block of this second.
  if (validAfter >= t) return reject(reasons.validAfter, `authorization is valid only after ${validAfter}`, payer);
  if (validBefore < t + BigInt(rules.expiryMarginSeconds)) {
    return reject(reasons.validBefore, `authorization expires at ${validBefore}, too soon to settle`, payer);
  }
  const slack = rules.validityOverTimeoutSeconds;
  if (slack !== undefined && validBefore - t > BigInt(required.maxTimeoutSeconds + slack)) {
    const message = `authorization is valid for ${validBefore - t}s, this facilitator takes at most ${required.maxTimeoutSeconds + slack}s`;
    return reject(reasons.validityTooLong, message, payer);
  }

  const nonce = auth.nonce.toLowerCase() as Hex;
  return {
    ok: true,
    intent: {
      x402Version: request.x402Version,
      networkId,
      asset,
      payTo: getAddress(auth.to),
      amount,
      maxTimeoutSeconds: required.maxTimeoutSeconds,
      signature: signature as Hex,
      authorization: { from: payer, to: getAddress(auth.to), value, validAfter, validBefore, nonce },
      key: {
        chainId: network.chainId,
        asset: asset.address.toLowerCase() as Address,
        payer: payer.toLowerCase() as Address,
        nonce,
      },
    },
  };
}

/**
 * The request asking exactly the amount its authorization is signed for (a payer's tier price may
 * not be the list price the requirements were made from): how a payment is presented again to be
 * found in the journal, where only the very row (`presentsRow`: signature, amount and every other
 * field) answers, and sent again to a remote exactly as it was settled. A payload that does not
 * parse is left as it is, for `toIntent` to refuse.
 *
 * @example redeliver(atSignedPrice(request), purpose) // a tier-priced payer's retry, before their price is known
 */
export function atSignedPrice(request: FacilitatorRequest): FacilitatorRequest {
  const parsed = exactEvmPayloadSchema.safeParse(request.paymentPayload.payload);
  if (!parsed.success) return request;
  const { value } = parsed.data.authorization;
  return request.x402Version === 2
    ? { ...request, paymentRequirements: { ...request.paymentRequirements, amount: value } }
    : { ...request, paymentRequirements: { ...request.paymentRequirements, maxAmountRequired: value } };
}

/**
 * A payment an in-process owner took, presented again for `purpose` once its authorization has
 * expired: its intent as it was while it could be taken, and its journal row, for the row to answer
 * as before the expiry (a top-up's payer collecting the credit a crash or a lost answer kept from
 * them: the USDC moved, only the credit is missing). Undefined for any other refusal, for the public
 * API's payments (one success per authorization there), for a hold (a call's, settled only while
 * valid) and for a payment never taken: nothing is taken late.
 *
 * @example const late = await takenLate(journal, rules, expiredRetry, purpose, rejection); // { intent, record } of its settled row
 */
export async function takenLate(
  journal: Pick<PaymentJournal, 'get'>,
  rules: IntentRules,
  request: FacilitatorRequest,
  purpose: string,
  rejection: Rejection,
): Promise<{ intent: PaymentIntent; record: PaymentRecord } | undefined> {
  if (rejection.reason !== reasons.validBefore || purpose === purposes.api) return undefined;
  const parsed = exactEvmPayloadSchema.safeParse(request.paymentPayload.payload);
  if (!parsed.success) return undefined;
  // The last second it could be taken: an authorization that passed the window checks once passes them there.
  const checked = toIntent(request, rules, Number(parsed.data.authorization.validBefore) - rules.expiryMarginSeconds);
  if (!checked.ok) return undefined;
  const record = await journal.get(checked.intent.key);
  // A hold is not taken yet: its own late settlement is refused as expired, as ever.
  return record && record.state !== 'verified' ? { intent: checked.intent, record } : undefined;
}

/** The journal row of a payment taken for `purpose` (see `purposes`). */
export function toNewPayment(intent: PaymentIntent, purpose: string): NewPayment {
  return {
    ...intent.key,
    payTo: intent.payTo.toLowerCase() as Address,
    amount: intent.amount,
    validAfter: intent.authorization.validAfter,
    validBefore: intent.authorization.validBefore,
    signature: intent.signature,
    network: intent.networkId,
    purpose,
  };
}

/**
 * Whether a request presents exactly the journalled payment: the key matched already, and the
 * signature and every other authorization field are the row's too. Who holds only the key
 * (payer and nonce are public once broadcast) presents nothing.
 *
 * @example if (!presentsRow(intent, record)) return undefined; // a forged signature gets nothing
 */
export function presentsRow(intent: PaymentIntent, row: NewPayment): boolean {
  return (
    intent.signature.toLowerCase() === row.signature.toLowerCase() &&
    intent.payTo.toLowerCase() === row.payTo.toLowerCase() &&
    intent.amount === row.amount &&
    intent.authorization.validAfter === row.validAfter &&
    intent.authorization.validBefore === row.validBefore
  );
}

/**
 * Whether a kept result answers this retry: kept for this very call (`purpose`), and bound to no
 * caller or to the one asking (`caller`, the digest the rail made of what its requests show, the
 * call's `Idempotency-Key` or else its network: see `FacilitatorPort.redeliver`). A payment copied
 * from its settlement on chain, sent with a guessed call from elsewhere, shows neither.
 *
 * @example if (!answers(kept, purpose, caller)) return undefined; // a retry without the call's Idempotency-Key, or from another network, gets nothing
 */
export function answers(kept: KeptResult | undefined, purpose: string, caller: string | undefined): kept is KeptResult {
  return kept?.call === purpose && (kept.caller === undefined || kept.caller === caller);
}
