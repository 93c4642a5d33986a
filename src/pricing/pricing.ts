import { z } from 'zod';

/** USDC has 6 decimals: 1 USD = 1,000,000 atomic units (and 1 credit micro-USD). */
const DECIMALS = 6;

/** A US cent in micro-USD (atomic units): Stripe's minor unit of a USD price or payment (Stripe moves whole cents). */
export const CENT = 10_000n;

/**
 * A USD price as a decimal string, converted exactly to USDC atomic units: no floats, and more
 * precision than a USDC unit is an error rather than a rounding.
 *
 * @example usdToAtomic('0.01') // 10000n
 */
export function usdToAtomic(usd: string): bigint {
  const match = /^\$?(\d{1,12})(?:\.(\d+))?$/.exec(usd.trim());
  if (!match) throw new PriceError(`"${usd}" is not a USD amount like 0.01`);
  const [, whole, fraction = ''] = match;
  if (fraction.length > DECIMALS) throw new PriceError(`"${usd}" has more than ${DECIMALS} decimals (USDC's precision)`);
  return BigInt(whole!) * 10n ** BigInt(DECIMALS) + BigInt(fraction.padEnd(DECIMALS, '0') || '0');
}

/** Atomic units back to a USD decimal string, exactly: `10000n` → `"0.01"`. */
export function atomicToUsd(atomic: bigint): string {
  // `%` and `/` truncate toward zero: a negative amount is its magnitude's digits behind a minus.
  if (atomic < 0n) return `-${atomicToUsd(-atomic)}`;
  const whole = atomic / 10n ** BigInt(DECIMALS);
  const fraction = (atomic % 10n ** BigInt(DECIMALS)).toString().padStart(DECIMALS, '0').replace(/0+$/, '');
  return fraction ? `${whole}.${fraction}` : `${whole}`;
}

/** A price string is not usable; the message says what was expected. */
export class PriceError extends Error {
  override name = 'PriceError';
}

/** A USD price in config or flags, validated and carried as atomic units. */
export const usdPrice = z.string().transform((value, ctx) => {
  try {
    return usdToAtomic(value);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
});

export const priceTableSchema = z.strictObject({
  /** Price of every tool not named otherwise. */
  default: usdPrice,
  tools: z.record(z.string().min(1), usdPrice).default({}),
  free: z.array(z.string().min(1)).default([]),
});
export type PriceTable = z.infer<typeof priceTableSchema>;

/**
 * What a call of `tool` costs in atomic units; 0n is free. A tool listed as free is free even if
 * it also has a price (the operator said so explicitly).
 */
export function priceOf(table: PriceTable, tool: string): bigint {
  if (table.free.includes(tool)) return 0n;
  // Own entries only: a tool named `constructor` or `toString` must not be priced by Object.prototype.
  return Object.hasOwn(table.tools, tool) ? table.tools[tool]! : table.default;
}
