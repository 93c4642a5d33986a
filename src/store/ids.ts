import { randomBytes } from 'node:crypto';

let last = 0;
let sequence = 0;

/**
 * A unique, time-ordered id such as `le_0mhz1k2a800000a3f9c1e2`: milliseconds, a per-process
 * sequence within the millisecond, then randomness, so ids sort by creation on one instance and
 * never collide across instances.
 *
 * @example newId('le') // ledger entry
 */
export function newId(prefix: string): string {
  const now = Date.now();
  sequence = now === last ? sequence + 1 : 0;
  last = now;
  return `${prefix}_${now.toString(36).padStart(9, '0')}${sequence.toString(36).padStart(4, '0')}${randomBytes(5).toString('hex')}`;
}
