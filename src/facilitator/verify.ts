import type { Address, Hex } from 'viem';
import type { PaymentJournal, PaymentRecord } from '../store/journal/journal.js';
import { reasons } from '../x402/reasons.js';
import type { FacilitatorRequest } from '../x402/schemas.js';
import type { PaymentChainState, StateReader } from './chain-state.js';
import { type IntentRules, type PaymentIntent, type Rejection, toIntent } from './intent.js';
import { authorizationDigest, classifySignature, signatureShape } from './signature.js';

export type VerifyDeps = {
  rules: IntentRules;
  readState: StateReader;
  journal: PaymentJournal;
  /** Unix seconds. */
  now: () => number;
  /** The facilitator's own policy for a purpose (whose payments, how small), after the request's checks. */
  admit: Admit;
};

/** A refusal of a well-formed payment by policy, or undefined when it may be taken for `purpose`. */
export type Admit = (intent: PaymentIntent, purpose: string | undefined) => Promise<Rejection | undefined>;

/** A payment that may be taken; `balance` is the payer's as the chain reported it, when it was read. */
export type Verified = { ok: true; intent: PaymentIntent; balance?: bigint } | ({ ok: false } & Rejection);

/**
 * Full verification of an `exact` EVM payment for `purpose` (see `purposes`): the checks that
 * need nothing (intent.ts), the policy, then turnpike's own journal (a payment it already took is
 * reported without touching the chain), then the signature (local ECDSA recovery for EOAs), then
 * one `eth_call` for the nonce, the balance and, for smart wallets only, ERC-1271.
 */
export async function verifyPayment(deps: VerifyDeps, request: FacilitatorRequest, purpose?: string): Promise<Verified> {
  const checked = await checkPayment(deps, request, purpose);
  return checked.ok ? verifyIntent(deps, checked.intent) : checked;
}

/**
 * The checks that need no chain: the request against the rules and the policy, then turnpike's
 * own journal. Only a hold taken for this very purpose passes (its holder settles it); any other
 * row, or a hold for anything else, is a used payment.
 */
export async function checkPayment(deps: Omit<VerifyDeps, 'readState'>, request: FacilitatorRequest, purpose?: string): Promise<Verified> {
  const checked = toIntent(request, deps.rules, deps.now());
  if (!checked.ok) return checked;
  const { intent } = checked;
  const payer = intent.authorization.from;
  const refused = await deps.admit(intent, purpose);
  if (refused) return { ok: false, ...refused };

  const known = await deps.journal.get(intent.key);
  if (known && (known.state !== 'verified' || known.purpose !== purpose)) return { ok: false, ...taken(known, purpose, payer) };
  return { ok: true, intent };
}

/**
 * Why a payment the journal holds cannot be taken again, asked for `purpose`: the reason its
 * settlement failed when that was for this very purpose, else used (see `alreadyUsed`).
 *
 * @example taken(settledForAnotherCall, purpose, payer).reason // reasons.nonceUsed
 */
function taken(known: PaymentRecord, purpose: string | undefined, payer: Address): Rejection {
  if (known.state === 'failed' && known.purpose === purpose) {
    const reason = (known.errorReason as Rejection['reason']) ?? reasons.transactionFailed;
    return { reason, message: 'this authorization already failed to settle', payer };
  }
  return alreadyUsed(known, payer);
}

/**
 * The answer to a payment the journal holds for someone else, naming its transaction if any.
 *
 * @example alreadyUsed(record, payer).message // 'this authorization is already used (transaction 0xab…)'
 */
export function alreadyUsed(record: PaymentRecord, payer: Address): Rejection {
  const where = record.txHash ? ` (transaction ${record.txHash})` : '';
  return { reason: reasons.nonceUsed, message: `this authorization is already used${where}`, payer };
}

/**
 * The part of verification that needs the chain: signature (ECDSA locally, else ERC-1271), nonce,
 * balance, in one state read. The signature is judged first, locally (an ERC-6492 wrapper is
 * refused, a 65-byte one recovered): the read then asks the wallet's ERC-1271 verdict only of a
 * signature that is not the payer's ECDSA, in the same `eth_call`, so no signature costs more than
 * one read. `meanwhile` (the gateway's journal hold) runs while the read is on the wire, so a
 * verification costs about one round trip.
 */
export async function verifyIntent(
  deps: Pick<VerifyDeps, 'readState' | 'rules'>,
  intent: PaymentIntent,
  meanwhile: () => Promise<unknown> = async () => {},
): Promise<Verified> {
  const payer = intent.authorization.from;
  if (signatureShape(intent.signature) === 'erc6492') return { ok: false, ...undeployedWallet(payer) };
  const digest = authorizationDigest(intent, deps.rules.network.chainId);
  const kind = (await classifySignature(intent, digest)) === 'eoa' ? 'eoa' : 'contract';
  const reading = deps.readState(intent, kind === 'contract' ? { digest } : undefined);
  reading.catch(() => {}); // awaited below; not unhandled meanwhile
  await new Promise((resolve) => setImmediate(resolve)); // the read's batch is sent on this turn
  await meanwhile();
  return judgeState(intent, kind, await reading);
}

/**
 * Whether a payment is signed by the payer it names (`authorization.from`), at whatever price it
 * is signed for, and not one the journal already holds: what must hold before anything is counted
 * in that payer's name (free calls, tier counts, quota notices), since until then `from` is only a
 * claim anyone can write, and a payment once settled is public (on chain, or in the mempool) for
 * anyone to send again. The checks that need nothing come first (at the signed price: the payer's
 * own price is known only once their call is counted); an EOA's ECDSA is recovered locally, no
 * RPC; any other signature is the wallet's to judge (`wallet`, on chain). Without `wallet` (a
 * remote facilitator with no chain client) it cannot be judged here and is refused: nothing is
 * counted for a signer nobody checked. Then the journal (one indexed read, made meanwhile): a
 * payment it holds in any state, for any purpose, is refused as `taken` says (used, for the same
 * call's retry too: `redeliver` answers that, uncounted). Balance is not judged, nor the nonce on
 * chain: an authorization used outside this journal is counted until the reservation or the
 * verification that follows refuses it (see `verifyIntent`), then given back.
 *
 * @example
 * const signer = await authenticatePayer({ rules, now, journal, wallet: deployedWallet(readState) }, request, purpose);
 * if (!signer.ok) return refuse(signer); // a forged signature: invalid_exact_evm_signature; a settled one: nonce used
 */
export async function authenticatePayer(
  deps: Pick<VerifyDeps, 'rules' | 'now' | 'journal'> & { wallet?: WalletCheck },
  request: FacilitatorRequest,
  purpose: string,
): Promise<Verified> {
  const checked = toIntent(request, deps.rules, deps.now(), 'signed');
  if (!checked.ok) return checked;
  const { intent } = checked;
  const payer = intent.authorization.from;
  const known = deps.journal.get(intent.key);
  known.catch(() => {}); // awaited below, once the signer is proven: a row is told only to its payer's signature
  const digest = authorizationDigest(intent, deps.rules.network.chainId);
  if ((await classifySignature(intent, digest)) !== 'eoa') {
    if (!deps.wallet) {
      const message = 'a smart wallet’s signature cannot be checked without the chain here: pay from an EOA';
      return { ok: false, reason: reasons.signature, message, payer };
    }
    const refused = await deps.wallet(intent, digest);
    if (refused) return { ok: false, ...refused };
  }
  const row = await known;
  return row ? { ok: false, ...taken(row, purpose, payer) } : checked;
}

/** A smart wallet's verdict on a signature of `digest` in its name: undefined when it signed, else why not. */
export type WalletCheck = (intent: PaymentIntent, digest: Hex) => Promise<Rejection | undefined>;

/**
 * A wallet judged as turnpike's own facilitator settles it: a deployed wallet's ERC-1271 (one
 * state read), an ERC-6492 wrapper refused (see `verifyIntent`).
 *
 * @example authenticatePayer({ rules, now, wallet: deployedWallet(readState) }, request)
 */
export const deployedWallet =
  (readState: StateReader): WalletCheck =>
  async (intent, digest) => {
    const payer = intent.authorization.from;
    if (signatureShape(intent.signature) === 'erc6492') return undeployedWallet(payer);
    return (await readState(intent, { digest })).walletApproves ? undefined : { ...notThePayers(payer), costly: true };
  };

const undeployedWallet = (payer: Address): Rejection => ({
  reason: reasons.signature,
  message: 'ERC-6492 signatures (wallets not deployed yet) are not accepted: deploy the wallet first',
  payer,
});
const notThePayers = (payer: Address): Rejection => ({
  reason: reasons.signature,
  message: 'signature is not the payer’s (ECDSA or ERC-1271)',
  payer,
});

/** The chain's verdict on a payment: the wallet's approval (smart wallets), the nonce, the balance; a refusal is `costly` (it took the read). */
export function judgeState(intent: PaymentIntent, kind: 'eoa' | 'contract', state: PaymentChainState): Verified {
  const payer = intent.authorization.from;
  if (kind === 'contract' && !state.walletApproves) return { ok: false, ...notThePayers(payer), costly: true };
  if (state.nonceUsed) {
    const message = 'the token reports this authorization as used or canceled';
    return { ok: false, reason: reasons.nonceUsed, message, payer, costly: true };
  }
  if (state.balance < intent.amount) {
    const message = `payer holds ${state.balance}, payment needs ${intent.amount}`;
    return { ok: false, reason: reasons.insufficientBalance, message, payer, costly: true };
  }
  return { ok: true, intent, balance: state.balance };
}
