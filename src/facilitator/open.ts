import type { Logger } from 'pino';
import type { ChainConnection } from '../chain/connect.js';
import type { Config } from '../config/schema.js';
import { openStore } from '../store/open.js';
import { createFacilitator } from './facilitator.js';

/**
 * The facilitator a serving command runs: the configured store, the chain's relayers, and the
 * journal reconciled (what a previous run left between claim and outcome finished) before the
 * caller serves a single request.
 *
 * @example const { store, facilitator } = await openFacilitator({ config, chain, logger });
 */
export async function openFacilitator({ config, chain, logger }: { config: Config; chain: ChainConnection; logger: Logger }) {
  const store = await openStore(config.store.url!, logger);
  const facilitator = createFacilitator({
    network: chain.network,
    client: chain.client,
    journal: store.journal,
    relayerKeys: chain.relayerKeys,
    logger,
  });
  try {
    const reconciled = await facilitator.reconcile();
    if (reconciled > 0) logger.info({ reconciled }, 'finished settlements left by the previous run');
  } catch (error) {
    await store.close();
    throw error;
  }
  return { store, facilitator };
}
