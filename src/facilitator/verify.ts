import type { PaymentJournal } from '../store/journal.js';
import { reasons } from '../x402/reasons.js';
import type { FacilitatorRequest } from '../x402/schemas.js';
import type { StateReader } from './chain-state.js';
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

  return verifyIntent(deps, intent);
}

/** The part of verification that needs the chain: signature (ECDSA locally, else ERC-1271), nonce, balance. */
export async function verifyIntent(deps: Pick<VerifyDeps, 'readState' | 'rules'>, intent: PaymentIntent): Promise<Verified> {
  const payer = intent.authorization.from;
  const digest = authorizationDigest(intent, deps.rules.network.chainId);
  const kind = await classifySignature(intent, digest);
  if (kind === 'erc6492') {
    return {
      ok: false,
      reason: reasons.signature,
      message: 'ERC-6492 signatures (wallets not deployed yet) are not accepted: deploy the wallet first',
      payer,
    };
  }
  const state = await deps.readState(intent, kind === 'contract' ? { digest } : undefined);
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
