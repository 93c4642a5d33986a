import v8 from 'node:v8';

/**
 * How far V8 lets the old generation grow past what survived the last full collection before it
 * collects again: 50 %, instead of V8's own factor (up to 4×, measured at ~3× on the gateway).
 * Under load the gateway's garbage is short-lived; with V8's factor it piles up to ~105 MB of old
 * space before the first full collection (RSS ~220 MB after the credits bench), with 50 % to ~50 MB
 * (RSS ~160 MB), at no CPU per call the bench can tell apart.
 */
export const HEAP_GROWING_PERCENT = 50;

/**
 * Sets `HEAP_GROWING_PERCENT` for this process: called once by a long-running server as it
 * starts (V8 reads it at each collection, so it applies from the next one).
 */
export function leanHeap(): void {
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}
