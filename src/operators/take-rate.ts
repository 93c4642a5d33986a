/**
 * Splits a charge between the operator and the platform at a take rate in basis points. The
 * platform's part is rounded down and the operator gets the rest, so the parts always sum to the
 * whole: no unit is lost or made up.
 *
 * @example splitCharge(10_000n, 250) // { platform: 250n, operator: 9_750n }
 */
export function splitCharge(amount: bigint, takeRateBps: number): { operator: bigint; platform: bigint } {
  if (!Number.isInteger(takeRateBps) || takeRateBps < 0 || takeRateBps > 10_000)
    throw new RangeError(`take rate ${takeRateBps} bps is not an integer in 0..10000`);
  if (amount < 0n) throw new RangeError('a charge is never negative');
  const platform = (amount * BigInt(takeRateBps)) / 10_000n;
  return { operator: amount - platform, platform };
}
