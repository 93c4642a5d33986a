import type { EventInput, EventType } from './events.js';

/** The events a caller gets without paying or authenticating: bounded per server, the rest counted. */
const LIMITED: ReadonlySet<EventType> = new Set(['call.challenged', 'call.refused']);

type Window = {
  start: number;
  passed: number;
  /** Suppressed events by type, then reason. */
  counts: Record<string, Record<string, number>>;
  suppressed: number;
  server: EventInput['server'];
  operatorId?: string;
  timer?: NodeJS.Timeout;
};

/**
 * Bounds the `call.challenged` and `call.refused` events of each server: at most `perWindow` in a
 * fixed window of `windowMs` (aligned to the clock) go out one by one; the rest are counted, and
 * one `calls.suppressed` event with the counts by type and reason is raised when the window ends
 * (or at `close`). Anyone can make a gateway challenge or refuse at the request rate, so without
 * this they could fill the outbox and make turnpike POST to every endpoint as fast as they send.
 * The counters are in memory, per instance: they bound load, not money.
 *
 * @example const limit = unpaidEventLimit({ perWindow: 60, windowMs: 60_000 }, (e) => queue(e)); if (limit.admit(input)) queue(input);
 */
export function unpaidEventLimit(bound: { perWindow: number; windowMs: number }, raise: (summary: EventInput) => void) {
  const windows = new Map<string, Window>();

  const end = (key: string, w: Window, until: number) => {
    clearTimeout(w.timer);
    windows.delete(key);
    if (w.suppressed === 0) return;
    raise({
      type: 'calls.suppressed',
      server: w.server,
      ...(w.operatorId ? { operatorId: w.operatorId } : {}),
      data: {
        from: new Date(w.start).toISOString(),
        until: new Date(until).toISOString(),
        limit: bound.perWindow,
        suppressed: w.suppressed,
        counts: w.counts,
      },
    });
  };

  return {
    /** Whether `input` goes out as an event; false when it is counted into its window's summary instead. */
    admit(input: EventInput, now = Date.now()): boolean {
      if (!LIMITED.has(input.type)) return true;
      const key = input.server.id;
      const start = now - (now % bound.windowMs);
      let w = windows.get(key);
      if (w && w.start !== start) end(key, w, w.start + bound.windowMs);
      w = windows.get(key);
      if (!w) {
        w = {
          start,
          passed: 0,
          counts: {},
          suppressed: 0,
          server: input.server,
          ...(input.operatorId ? { operatorId: input.operatorId } : {}),
        };
        windows.set(key, w);
      }
      if (w.passed < bound.perWindow) {
        w.passed++;
        return true;
      }
      const reason = input.reason ?? 'unknown';
      const byReason = (w.counts[input.type] ??= {});
      byReason[reason] = (byReason[reason] ?? 0) + 1;
      w.suppressed++;
      const ending = w;
      ending.timer ??= setTimeout(() => end(key, ending, ending.start + bound.windowMs), ending.start + bound.windowMs - now).unref();
      return false;
    },
    /** Raises the summaries of the windows still open (a stopping instance). */
    close(now = Date.now()) {
      for (const [key, w] of windows) end(key, w, now);
    },
  };
}
