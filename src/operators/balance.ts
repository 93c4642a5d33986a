/**
 * An operator's money, in atomic USDC units (= micro-USD). `usdc*` is x402 revenue of
 * platform-custody servers (withdrawable on chain); `fiat*` is the operator's share of credits
 * spent and subscriptions paid on their servers (paid out through Stripe Connect); `direct` was
 * paid straight to their own address and is only reported. `invoiced` is the operator's share of
 * post-paid usage delivered on their servers: billed on the customers' Stripe invoices at the
 * period's end, not yet collected, so neither withdrawable nor payable out (reported only).
 */
export type Balance = {
  usdcEarned: bigint;
  usdcPending: bigint;
  usdcWithdrawn: bigint;
  usdcReserved: bigint;
  usdcAvailable: bigint;
  fiatEarned: bigint;
  fiatPaidOut: bigint;
  fiatReserved: bigint;
  fiatAvailable: bigint;
  direct: bigint;
  invoiced: bigint;
};

/** What a balance is made of: the sums of an operator's charges, withdrawals and payouts. */
export type BalanceSums = Omit<Balance, 'usdcAvailable' | 'fiatAvailable'>;

/** What is available is what was earned less what was paid out and what requests have reserved. */
export const balanceOf = (s: BalanceSums): Balance => ({
  ...s,
  usdcAvailable: s.usdcEarned - s.usdcWithdrawn - s.usdcReserved,
  fiatAvailable: s.fiatEarned - s.fiatPaidOut - s.fiatReserved,
});

/** A request for money refused, with nothing written. */
export type Refusal = { ok: false; reason: 'insufficient_balance' | 'below_minimum'; available: bigint };

/**
 * The rule of a request for money once no earlier record holds its idempotency key: refused
 * (below the minimum, more than is available) or undefined, to be recorded. Nothing is ever
 * asked for nothing: a configured minimum of 0 still refuses 0 (a transfer of 0 would spend gas).
 *
 * @example refusal({ amount: 49n, minimum: 50n }, 1_000n) // { ok: false, reason: 'below_minimum', available: 1_000n }
 * @example refusal({ amount: 0n, minimum: 0n }, 1_000n) // { ok: false, reason: 'below_minimum', available: 1_000n }
 */
export function refusal(request: { amount: bigint; minimum: bigint }, available: bigint): Refusal | undefined {
  if (request.amount < request.minimum || request.amount <= 0n) return { ok: false, reason: 'below_minimum', available };
  if (request.amount > available) return { ok: false, reason: 'insufficient_balance', available };
  return undefined;
}
