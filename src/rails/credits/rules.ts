import type { BudgetToken, DebitResult, KeyRecord } from '../../store/credits/credits.js';

const DAY_MS = 86_400_000;
/** The UTC day a daily limit counts in: days since the epoch. */
export const utcDay = (ms: number) => BigInt(Math.floor(ms / DAY_MS));

/** Key refusals: what makes a key pay for nothing, whatever it holds or is billed to. */
export type KeyRefusal = 'key_revoked' | 'key_suspended' | 'key_expired';

/**
 * Why a key may not pay (be charged, or billed post-paid) at `now`, if it may not: its status,
 * then its expiry. Checked in the transaction that charges, against the key as stored then, so a
 * key revoked on another instance pays for nothing from its next call.
 *
 * @example keyRefusal({ ...key, status: 'revoked' }, Date.now()) // 'key_revoked'
 */
export function keyRefusal(key: Pick<KeyRecord, 'status' | 'expiresAt'>, now: number): KeyRefusal | undefined {
  if (key.status === 'revoked') return 'key_revoked';
  if (key.status === 'suspended') return 'key_suspended';
  if (key.expiresAt !== undefined && key.expiresAt <= now) return 'key_expired';
  return undefined;
}

/**
 * Whether a key may pay `amount` at `now`, through a budget token if one was named (`'unknown'`:
 * named, but not found or not the key's). Checked in order: the key's status and expiry, its
 * lifetime then daily limit, the token (the key's, not revoked, not expired, its budget), then the
 * balance; the first rule broken refuses, with what is left of the limit, budget or balance.
 * Allowed: what the token has left after the debit. The ledger applies it in the transaction
 * that debits (the key's row locked), so two debits cannot both pass on the same money.
 *
 * @example debitVerdict({ ...key, balance: 5n }, undefined, 10n, Date.now()) // { ok: false, reason: 'insufficient_balance', balance: 5n }
 */
export function debitVerdict(
  key: KeyRecord,
  token: BudgetToken | 'unknown' | undefined,
  amount: bigint,
  now: number,
): Extract<DebitResult, { ok: false }> | { ok: true; tokenRemaining?: bigint } {
  const { balance } = key;
  const unusable = keyRefusal(key, now);
  if (unusable) return { ok: false, reason: unusable };
  if (key.lifetimeLimit !== undefined && key.spentTotal + amount > key.lifetimeLimit) {
    return { ok: false, reason: 'lifetime_limit', balance, limitRemaining: key.lifetimeLimit - key.spentTotal };
  }
  if (key.dailyLimit !== undefined && key.spentToday + amount > key.dailyLimit) {
    return { ok: false, reason: 'daily_limit', balance, limitRemaining: key.dailyLimit - key.spentToday };
  }
  let tokenRemaining: bigint | undefined;
  if (token !== undefined) {
    if (token === 'unknown' || token.keyId !== key.id) return { ok: false, reason: 'token_unknown' };
    if (token.revokedAt !== undefined) return { ok: false, reason: 'token_revoked' };
    if (token.expiresAt <= now) return { ok: false, reason: 'token_expired' };
    const left = token.cap - token.spent;
    if (amount > left) return { ok: false, reason: 'budget_exhausted', balance, tokenRemaining: left };
    tokenRemaining = left - amount;
  }
  if (balance < amount) {
    // What the token would have left had the debit not been refused.
    const budget = tokenRemaining !== undefined ? { tokenRemaining: tokenRemaining + amount } : {};
    return { ok: false, reason: 'insufficient_balance', balance, ...budget };
  }
  return { ok: true, ...(tokenRemaining !== undefined ? { tokenRemaining } : {}) };
}
