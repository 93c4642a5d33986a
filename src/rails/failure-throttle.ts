/**
 * Abuse throttling by caller: failures are counted per caller in fixed windows, and a caller
 * past `limit` failures in its window is turned away until the window ends. Memory is bounded:
 * at most `maxCallers` windows are kept, the oldest dropped first, which may let a caller off
 * early under a flood of addresses (fine for throttling; never use this for money).
 *
 * @example
 * const throttle = failureThrottle({ limit: 60 });
 * const wait = throttle.wait(ip); // seconds; 0 = serve it
 * if (refused) throttle.failed(ip);
 */
export function failureThrottle(options: { limit: number; windowMs?: number; maxCallers?: number; now?: () => number }) {
  const { limit, windowMs = 60_000, maxCallers = 10_000, now = Date.now } = options;
  const windows = new Map<string, { start: number; failures: number }>();
  const current = (caller: string) => {
    const window = windows.get(caller);
    return window && now() - window.start < windowMs ? window : undefined;
  };
  return {
    /** Seconds until `caller` may be served again; 0 when it may be now (always, with limit 0). */
    wait(caller: string): number {
      const window = current(caller);
      return limit > 0 && window && window.failures >= limit ? Math.ceil((window.start + windowMs - now()) / 1000) : 0;
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
