import type { Logger } from 'pino';
import type { ChainConnection } from '../chain/connect.js';
import { MULTICALL3 } from '../chain/networks.js';
import type { Config } from '../config/schema.js';
import { type Secrets, requireSecret } from '../config/secrets.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import { StoreError } from '../store/store.js';
import { type Facilitator, createFacilitator } from '../facilitator/facilitator.js';
import type { FacilitatorPort } from '../facilitator/port.js';
import { keepRecovering } from '../facilitator/recovery.js';

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
    maxDeferredPerPayer: config.facilitator.maxDeferredPerPayerUsd,
    maxDeferredTotal: config.facilitator.maxDeferredTotalUsd,
    holdsRelayers: () => store.holdsLeases(),
    ...(payees ? { payees: () => payees(store) } : {}),
  });
  if (chain.multicall3) {
    logger.info({ multicall3: MULTICALL3 }, 'Multicall3 on the node: verification reads batched, settlements group-committed');
  } else {
    const mode = 'no Multicall3 on the node: verification reads as plain eth_calls, one transaction per settlement';
    logger.warn({ multicall3: MULTICALL3 }, mode);
  }
  try {
    for (const relayer of facilitator.relayers) {
      if (!(await store.lease(`relayer:${relayer.toLowerCase()}`))) {
        throw new StoreError(
          `relayer ${relayer} is sending for another turnpike instance on this store; give each instance its own TURNPIKE_RELAYER_KEY`,
        );
      }
    }
  } catch (error) {
    await store.close();
    throw error;
  }
  const { close } = await keepRecovering(store, facilitator, logger);
  return { store, facilitator, close };
}

/**
 * How a gateway takes x402 payments, by `facilitator.mode`, over the configured store:
 *
 * - `self`: turnpike's own facilitator (`openFacilitator`), also served as the `/facilitator` API (`api`);
 * - `remote`: the x402 facilitator at `facilitator.url`, sent TURNPIKE_REMOTE_FACILITATOR_KEY if set;
 * - `cdp`: Coinbase's hosted facilitator (CDP_API_KEY_ID / CDP_API_KEY_SECRET), or `facilitator.url` in front of it.
 *
 * In every mode holds, outcomes and kept results are in the local journal (see `FacilitatorPort`);
 * `url` is where payments are settled, for discovery (undefined: this gateway's `/facilitator`).
 *
 * @example const { store, payments, api, close } = await openPayments({ config, secrets, chain, logger, payees });
 */
export async function openPayments(options: {
  config: Config;
  secrets: Secrets;
  chain: ChainConnection;
  logger: Logger;
  payees?: (store: Store) => Promise<Iterable<string>>;
}): Promise<{ store: Store; payments: FacilitatorPort; api?: Facilitator; url?: string; close(): Promise<void> }> {
  const { config, secrets, chain, logger } = options;
  const { mode, url } = config.facilitator;
  if (mode === 'self') {
    const { store, facilitator, close } = await openFacilitator(options);
    return { store, payments: facilitator, api: facilitator, close };
  }
  const store = await openStore(config.store.url!, logger);
  let remote;
  try {
    // The x402 client packages (@x402/core, @coinbase/x402 and the CDP SDK) load only for a remote facilitator.
    const { cdpFacilitator, remoteFacilitator } = await import('../facilitator/remote.js');
    const local = { journal: store.journal, network: chain.network, client: chain.client };
    remote =
      mode === 'cdp'
        ? cdpFacilitator(cdpApiKey(secrets), { ...local, ...(url ? { url } : {}) })
        : remoteFacilitator({ ...local, url: url!, ...(secrets.remoteFacilitatorKey ? { apiKey: secrets.remoteFacilitatorKey } : {}) });
  } catch (error) {
    await store.close();
    throw error;
  }
  const { close } = await keepRecovering(store, remote, logger);
  return { store, payments: remote, url: remote.url, close };
}

/** The CDP API key `facilitator.mode: cdp` needs, from the environment; a ConfigError naming the variables when one is unset. */
function cdpApiKey(secrets: Secrets) {
  const why = 'to use the hosted CDP facilitator (facilitator.mode: cdp)';
  return { cdpApiKeyId: requireSecret(secrets, 'cdpApiKeyId', why), cdpApiKeySecret: requireSecret(secrets, 'cdpApiKeySecret', why) };
}
