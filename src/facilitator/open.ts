import type { Logger } from 'pino';
import type { ChainConnection } from '../chain/connect.js';
import { MULTICALL3 } from '../chain/networks.js';
import type { Config } from '../config/schema.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import { StoreError } from '../store/store.js';
import { type Facilitator, createFacilitator } from './facilitator.js';

/** How often an instance looks for the journal entries of instances that died. */
const RECOVER_EVERY_MS = 15_000;

/**
 * Finishes the unfinished journal entries of instances that are gone (their `instance:<id>`
 * lease is free: the process ended, however it ended). Taking that lease is also what makes the
 * recovery happen once: of several live instances, one gets it and the others skip those entries.
 * Entries of live instances, this one included, are theirs to finish.
 */
export async function recoverOrphans(store: Store, facilitator: Facilitator): Promise<number> {
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
 * The facilitator a serving command runs: the configured store, this instance's relayer keys
 * leased (no other instance on the store may send from them), and the journal entries that
 * instances which died left between claim and outcome finished before the caller serves a
 * single request, and every 15 s after (when results kept for lost answers nobody can still ask
 * for go too).
 *
 * Its public API takes payments of at least `facilitator.minAmountUsd`, to `payees` only when
 * given (a gateway's own; read from the store per request).
 *
 * @example const { store, facilitator, close } = await openFacilitator({ config, chain, logger });
 */
export async function openFacilitator(options: {
  config: Config;
  chain: ChainConnection;
  logger: Logger;
  payees?: (store: Store) => Promise<Iterable<string>>;
}) {
  const { config, chain, logger, payees } = options;
  const store = await openStore(config.store.url!, logger);
  const facilitator = createFacilitator({
    network: chain.network,
    client: chain.client,
    journal: store.journal,
    relayerKeys: chain.relayerKeys,
    logger,
    multicall3: chain.multicall3,
    minimumAmount: config.facilitator.minAmountUsd,
    validityOverTimeoutSeconds: config.facilitator.maxValidityOverTimeoutSeconds,
    ...(payees ? { payees: () => payees(store) } : {}),
  });
  const recover = async () => {
    const reconciled = await recoverOrphans(store, facilitator);
    if (reconciled > 0) logger.info({ reconciled }, 'finished settlements left by a stopped instance');
    await store.journal.forgetResults(Math.floor(Date.now() / 1000));
  };
  if (chain.multicall3) {
    logger.info({ multicall3: MULTICALL3 }, 'Multicall3 on the node: verification reads batched, settlements group-committed');
  } else {
    const mode = 'no Multicall3 on the node: verification reads as plain eth_calls, one transaction per settlement';
    logger.warn({ multicall3: MULTICALL3 }, mode);
  }
  try {
    for (const relayer of facilitator.relayers) {
      if (!(await store.lease(`relayer:${relayer.toLowerCase()}`))) {
        throw new StoreError(`relayer ${relayer} is sending for another turnpike instance on this store; give each instance its own TURNPIKE_RELAYER_KEY`);
      }
    }
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
    store,
    facilitator,
    /** Stops recovering and closes the store. */
    async close() {
      clearInterval(timer);
      await recovering;
      await store.close();
    },
  };
}
