import type { Logger } from 'pino';
import type { CreditStore } from '../../store/credits/credits.js';

/** How often delivered calls' debits are closed: one write per interval, not one per call. */
const CLOSE_EVERY_MS = 100;

/** Charges held open while their calls run: a debit (credits), a usage entry (post-paid). */
export type OpenCharges = {
  /** Marks charges whose calls were delivered: they stand. */
  close(ids: string[]): Promise<void>;
  /** Open charges made before `before` (ms), oldest first. */
  openBefore(before: number): Promise<string[]>;
  /** Undoes one charge in full (once). */
  undo(id: string, why: string): Promise<unknown>;
};

/** A credits ledger's open debits as open charges. */
export const openLedgerDebits = (ledger: CreditStore): OpenCharges => ({
  close: (ids) => ledger.closeDebits(ids),
  openBefore: (before) => ledger.openDebits(before),
  undo: (id, why) => ledger.refund(id, why),
});

/**
 * Keeps "charged" meaning "delivered". A credits-paid call's debit is opened with it and closed
 * once the result is delivered; a debit a crash left open (turnpike died between the debit and
 * the answer) is refunded by the sweep once it is older than the longest a call may run.
 * Closing is batched, so a crash can also leave the last ~100 ms of delivered calls open: those
 * are refunded too, in the caller's favour, never a charge without a result.
 *
 * @example
 * const debits = openDebits(openLedgerDebits(store.credits), { maxCallMs: async () => 70_000, logger });
 * debits.start();            // sweeps now, then periodically
 * debits.delivered(entryId); // after the result went out
 */
export function openDebits(
  charges: OpenCharges,
  options: {
    /** The longest a call may run; asked at each sweep, since servers and their timeouts change. */
    maxCallMs: () => Promise<number>;
    logger?: Logger;
    /** Runs before each batch closes: what must be on disk before a debit counts as delivered (its revenue charge). */
    beforeClose?: () => Promise<void>;
  },
) {
  let closing: string[] = [];
  let timer: NodeJS.Timeout | undefined;
  let sweeper: NodeJS.Timeout | undefined;

  async function flush() {
    timer = undefined;
    const ids = closing;
    closing = [];
    if (ids.length === 0) return;
    await options.beforeClose?.();
    await charges.close(ids);
  }

  async function sweep(now = Date.now()): Promise<number> {
    const stale = await charges.openBefore(now - (await options.maxCallMs()));
    for (const id of stale) await charges.undo(id, 'the call was cut off: turnpike stopped before answering');
    if (stale.length > 0) options.logger?.warn({ undone: stale.length, first: stale[0] }, 'undid the charges of calls cut off by a stop');
    return stale.length;
  }

  return {
    delivered(debitId: string) {
      closing.push(debitId);
      timer ??= setTimeout(
        () => void flush().catch((err: unknown) => options.logger?.error({ err }, 'cannot close delivered debits')),
        CLOSE_EVERY_MS,
      ).unref();
    },
    sweep,
    /** Sweeps now and then every half `maxCallMs` (at most a minute). */
    async start() {
      await sweep();
      const every = Math.min((await options.maxCallMs()) / 2, 60_000);
      sweeper = setInterval(
        () => void sweep().catch((err: unknown) => options.logger?.error({ err }, 'open debit sweep failed')),
        every,
      ).unref();
    },
    /** Stops sweeping and closes what was delivered, before the store closes. */
    async stop() {
      clearInterval(sweeper);
      clearTimeout(timer);
      await flush();
    },
  };
}

export type OpenDebits = ReturnType<typeof openDebits>;
