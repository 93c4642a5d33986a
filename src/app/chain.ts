import { type ChainConnection, connectChain } from '../chain/connect.js';
import type { Config } from '../config/schema.js';
import { type Secrets, requireSecret } from '../config/secrets.js';

/**
 * Connects to the chain the settings name (`network`, `rpcUrl`), with the relayer keys from the
 * environment; they are required (when the node is not the embedded sandbox) only if this process
 * `settles` (false: a gateway whose payments another facilitator settles).
 *
 * @example const chain = await connectConfiguredChain(config, loadSecrets(), { settles: config.facilitator.mode === 'self' });
 */
export function connectConfiguredChain(config: Config, secrets: Secrets, { settles = true } = {}): Promise<ChainConnection> {
  return connectChain({
    network: config.network,
    rpcUrl: config.rpcUrl,
    relayerKeys: secrets.relayerKeys,
    requireRelayerKeys: settles ? (why) => requireSecret(secrets, 'relayerKeys', why) : undefined,
  });
}
