import { PerformanceObserver } from 'node:perf_hooks';
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
 * The size V8's young generation (its new space: two semi-spaces) is held at: 16 MB, half of what
 * V8 grows it to on 64-bit (32 MB, all of it resident once grown, idle or not). `npm run
 * bench:credits`, the gateway: RSS 124 → 108 MB idle and 151 → 136 MB after the load; scavenges
 * twice as frequent, ~300–400 µs CPU per call either way (runs alternated, within their noise).
 */
export const YOUNG_GENERATION_MB = 16;

const newSpaceBytes = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')!.space_size;

let observer: PerformanceObserver | undefined;

/**
 * Sets `HEAP_GROWING_PERCENT` for this process and holds its young generation at
 * `YOUNG_GENERATION_MB`. Called by a process's entry point before it loads the rest of its modules:
 * V8 grows the young generation while modules load (everything survives then) and gives it back
 * only at an idle full collection, so a later call holds it at whatever it has grown to.
 *
 * V8 sizes its young generation when the process starts (node's `--max-semi-space-size`, a flag of
 * the command line only); afterwards it reads just its growth factor, at each growth. So the factor
 * is set again after every collection: the one that takes the young generation from its size to
 * `YOUNG_GENERATION_MB` in one growth, 1 (grow no more) once it is there. One synchronous run of
 * code that keeps more than that alive can grow it once more before the next setting (V8 shrinks it
 * again when idle). A V8 that raises a factor below 2 (newer releases than Node 20's do) grows it as
 * it always did. Calling it again changes nothing.
 *
 * @example leanHeap(); const { run } = await import('./run.js');
 */
export function leanHeap(): void {
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  const factor = () => Math.max(1, Math.floor((YOUNG_GENERATION_MB * 2 ** 20) / newSpaceBytes()));
  const hold = () => v8.setFlagsFromString(`--semi-space-growth-factor=${factor()}`);
  hold();
  if (observer) return;
  observer = new PerformanceObserver(hold);
  observer.observe({ entryTypes: ['gc'] });
}
