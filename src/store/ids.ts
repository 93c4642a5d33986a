import { randomBytes } from 'node:crypto';

let last = 0;
let sequence = 0;
// Per process, not per id: unique across instances without paying for randomness on every call.
const instance = randomBytes(5).toString('hex');

/**
 * A unique, time-ordered id such as `le_0mhz1k2a800000a3f9c1e2`: milliseconds, a sequence
 * within the millisecond, then a random tag of this process, so ids sort by creation on one
 * instance and never collide across instances.
 *
 * @example newId('le') // ledger entry
 */
export function newId(prefix: string): string {
  // Never backwards, even if the wall clock is stepped back: ids stay unique and ordered.
  const now = Math.max(Date.now(), last);
  sequence = now === last ? sequence + 1 : 0;
  last = now;
  return `${prefix}_${now.toString(36).padStart(9, '0')}${sequence.toString(36).padStart(4, '0')}${instance}`;
}
