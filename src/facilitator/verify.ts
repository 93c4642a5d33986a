import type { PaymentJournal } from '../store/journal.js';
import { reasons } from '../x402/reasons.js';
import type { FacilitatorRequest } from '../x402/schemas.js';
import type { Hex } from 'viem';
import type { PaymentChainState, StateReader } from './chain-state.js';
import { type IntentRules, type PaymentIntent, type Rejection, toIntent } from './intent.js';
import { authorizationDigest, classifySignature } from './signature.js';

export type VerifyDeps = {
  rules: IntentRules;
  readState: StateReader;
  journal: PaymentJournal;
  /** Unix seconds. */
  now: () => number;
};

export type Verified = { ok: true; intent: PaymentIntent } | ({ ok: false } & Rejection);

/**
 * Full verification of an `exact` EVM payment: the checks that need nothing (intent.ts), then
 * turnpike's own journal (a payment it already took is reported without touching the chain),
 * then the signature (local ECDSA recovery for EOAs), then one `eth_call` for the nonce, the
 * balance and, for smart wallets only, ERC-1271.
 */
export async function verifyPayment(deps: VerifyDeps, request: FacilitatorRequest): Promise<Verified> {
  const checked = await checkPayment(deps, request);
  return checked.ok ? verifyIntent(deps, checked.intent) : checked;
}

/** The checks that need no chain: the request against the rules, then turnpike's own journal. */
export async function checkPayment(deps: Omit<VerifyDeps, 'readState'>, request: FacilitatorRequest): Promise<Verified> {
  const checked = toIntent(request, deps.rules, deps.now());
  if (!checked.ok) return checked;
  const { intent } = checked;
  const payer = intent.authorization.from;

  const known = await deps.journal.get(intent.key);
  if (known && known.state !== 'verified') {
    if (known.state === 'failed') {
      return { ok: false, reason: (known.errorReason as Rejection['reason']) ?? reasons.transactionFailed, message: 'this authorization already failed to settle', payer };
    }
    const where = known.txHash ? ` in ${known.txHash}` : '';
    return { ok: false, reason: reasons.nonceUsed, message: `this authorization was already submitted${where}`, payer };
  }
  return { ok: true, intent };
}

/** The part of verification that needs the chain: signature (ECDSA locally, else ERC-1271), nonce, balance. */
export async function verifyIntent(deps: Pick<VerifyDeps, 'readState' | 'rules'>, intent: PaymentIntent): Promise<Verified> {
  const signed = await checkSignature(deps, intent);
  if (!signed.ok) return signed;
  return judgeState(intent, signed.kind, await deps.readState(intent, signed.wallet));
}

export type SignatureCheck = ({ ok: true; kind: 'eoa' | 'contract'; wallet?: { digest: Hex } }) | ({ ok: false } & Rejection);

/** Recovers an EOA signature locally; anything else is left to the wallet's ERC-1271 (in the state read). */
export async function checkSignature(deps: Pick<VerifyDeps, 'rules'>, intent: PaymentIntent): Promise<SignatureCheck> {
  const digest = authorizationDigest(intent, deps.rules.network.chainId);
  const kind = await classifySignature(intent, digest);
  if (kind === 'erc6492') {
    return {
      ok: false,
      reason: reasons.signature,
      message: 'ERC-6492 signatures (wallets not deployed yet) are not accepted: deploy the wallet first',
      payer: intent.authorization.from,
    };
  }
  return kind === 'contract' ? { ok: true, kind, wallet: { digest } } : { ok: true, kind };
}

/** The chain's verdict on a payment: the wallet's approval (smart wallets), the nonce, the balance. */
export function judgeState(intent: PaymentIntent, kind: 'eoa' | 'contract', state: PaymentChainState): Verified {
  const payer = intent.authorization.from;
  if (kind === 'contract' && !state.walletApproves) {
    return { ok: false, reason: reasons.signature, message: 'signature is not the payer’s (ECDSA or ERC-1271)', payer };
  }
  if (state.nonceUsed) {
    return { ok: false, reason: reasons.nonceUsed, message: 'the token reports this authorization as used or canceled', payer };
  }
  if (state.balance < intent.amount) {
    return {
      ok: false,
      reason: reasons.insufficientBalance,
      message: `payer holds ${state.balance}, payment needs ${intent.amount}`,
      payer,
    };
  }
  return { ok: true, intent };
}
