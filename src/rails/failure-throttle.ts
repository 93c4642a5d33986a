/**
 * Abuse throttling by caller: failures are counted per caller in fixed windows, and a caller
 * past `limit` failures in its window is turned away until the window ends. An attempt under way
 * (`begin` … `end`) counts as a failure until it ends, so concurrent attempts cannot all pass
 * `wait` before the first of them fails: at most `limit` attempts are judged or failed at once, and
 * a caller turned away only by those under way waits a second. Memory is bounded: at most
 * `maxCallers` windows are kept, the oldest dropped first, which may let a caller off early under
 * a flood of addresses (fine for throttling; never use this for money); attempts under way are
 * kept until they end, one per request in flight.
 *
 * @example
 * const throttle = failureThrottle({ limit: 60 });
 * const wait = throttle.wait(ip); // seconds; 0 = serve it
 * const end = throttle.begin(ip);
 * try { if (await refused()) throttle.failed(ip); } finally { end(); }
 */
export function failureThrottle(options: { limit: number; windowMs?: number; maxCallers?: number; now?: () => number }) {
  const { limit, windowMs = 60_000, maxCallers = 10_000, now = Date.now } = options;
  const windows = new Map<string, { start: number; failures: number }>();
  const underWay = new Map<string, number>();
  const current = (caller: string) => {
    const window = windows.get(caller);
    return window && now() - window.start < windowMs ? window : undefined;
  };
  return {
    /** Seconds until `caller` may be served again; 0 when it may be now (always, with limit 0). */
    wait(caller: string): number {
      if (limit === 0) return 0;
      const window = current(caller);
      const failures = window?.failures ?? 0;
      if (window && failures >= limit) return Math.ceil((window.start + windowMs - now()) / 1000);
      return failures + (underWay.get(caller) ?? 0) >= limit ? 1 : 0;
    },
    /** Starts an attempt of `caller`'s, counted as a failure until the function returned is called (once; `failed` first if it failed). */
    begin(caller: string): () => void {
      if (limit === 0) return () => {};
      underWay.set(caller, (underWay.get(caller) ?? 0) + 1);
      let ended = false;
      return () => {
        if (ended) return;
        ended = true;
        const left = underWay.get(caller)! - 1;
        if (left === 0) underWay.delete(caller);
        else underWay.set(caller, left);
      };
    },
    failed(caller: string): void {
      if (limit === 0) return;
      const window = current(caller);
      if (window) {
        window.failures++;
        return;
      }
      // Re-inserted at the end: the map stays ordered by window start, oldest first.
      windows.delete(caller);
      if (windows.size >= maxCallers) windows.delete(windows.keys().next().value!);
      windows.set(caller, { start: now(), failures: 1 });
    },
  };
}
