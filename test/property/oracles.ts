/**
 * Oracles built from the digits of a bigint, never from Number: `usdOf` writes atomic units as
 * USD, `atomicOf` reads the USD grammar (`$`? 1–12 digits, then optionally `.` and 1+ digits)
 * character by character.
 */
const DIGITS = '0123456789';
const allDigits = (s: string) => s.length > 0 && [...s].every((c) => DIGITS.includes(c));

export function usdOf(atomic: bigint): string {
  if (atomic < 0n) return `-${usdOf(-atomic)}`;
  const digits = atomic.toString().padStart(7, '0');
  const whole = digits.slice(0, -6).replace(/^0+(?=.)/, '');
  const fraction = digits.slice(-6).replace(/0+$/, '');
  return fraction === '' ? whole : `${whole}.${fraction}`;
}

/** The atomic amount `text` spells, `'too precise'`, or undefined for text that is no amount. */
export function atomicOf(text: string): bigint | 'too precise' | undefined {
  const body = text.trim().replace(/^\$/, '');
  const [whole = '', fraction, ...rest] = body.split('.');
  if (rest.length > 0 || !allDigits(whole) || whole.length > 12) return undefined;
  if (fraction === undefined) return BigInt(whole) * 1_000_000n;
  if (!allDigits(fraction)) return undefined;
  if (fraction.length > 6) return 'too precise';
  return BigInt(whole) * 1_000_000n + BigInt(fraction.padEnd(6, '0'));
}
