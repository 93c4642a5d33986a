import type { Logger } from 'pino';
import type { Store } from '../store/store.js';

/** How often an instance looks for the journal entries of instances that died. */
const RECOVER_EVERY_MS = 15_000;

/** What finishes the journal entries an instance left (all, or one owner's). */
type Reconciling = { reconcile(filter: { owner: string | null }): Promise<number> };

/**
 * Finishes the unfinished journal entries of instances that are gone (their `instance:<id>`
 * lease is free: the process ended, however it ended). Taking that lease is also what makes the
 * recovery happen once: of several live instances, one gets it and the others skip those entries.
 * Entries of live instances, this one included, are theirs to finish.
 */
export async function recoverOrphans(store: Store, facilitator: Reconciling): Promise<number> {
  let finished = 0;
  for (const owner of await store.journal.unfinishedOwners()) {
    if (owner === store.instanceId) continue;
    const lease = await store.lease(`instance:${owner ?? 'unowned'}`);
    if (!lease) continue;
    try {
      finished += await facilitator.reconcile({ owner });
    } finally {
      await lease.release();
    }
  }
  return finished;
}

/**
 * Finishes what instances that died left (see `recoverOrphans`) and forgets kept results nobody
 * can ask for any more, once before it returns and every 15 s after; `close` stops that and
 * closes the store (also when the first round fails).
 */
export async function keepRecovering(store: Store, facilitator: Reconciling, logger: Logger) {
  const recover = async () => {
    const reconciled = await recoverOrphans(store, facilitator);
    if (reconciled > 0) logger.info({ reconciled }, 'finished settlements left by a stopped instance');
    await store.journal.forgetResults(Math.floor(Date.now() / 1000));
  };
  try {
    await recover();
  } catch (error) {
    await store.close();
    throw error;
  }
  let recovering: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    recovering = recover().catch((err: unknown) => logger.error({ err }, 'journal recovery failed'));
  }, RECOVER_EVERY_MS).unref();
  return {
    /** Stops recovering and closes the store. */
    async close() {
      clearInterval(timer);
      await recovering;
      await store.close();
    },
  };
}
