import { type Hex, type PublicClient, createPublicClient } from 'viem';
import type { Config } from '../config/schema.js';
import { type Secrets, requireSecret } from '../config/secrets.js';
import { MULTICALL3, networks } from './networks.js';
import { rpcTransport } from './rpc-transport.js';
import { type Sandbox, startSandbox } from './sandbox/sandbox.js';
import { ChainUnavailableError } from './errors.js';

export type ChainConnection = {
  network: (typeof networks)[keyof typeof networks];
  rpcUrl: string;
  client: PublicClient;
  relayerKeys: Hex[];
  /**
   * Whether the node has code at Multicall3's canonical address, looked at once here: without it,
   * verification reads with plain `eth_call`s and each settlement is its own transaction.
   */
  multicall3: boolean;
  /** Present when the embedded sandbox was started for this process. */
  sandbox?: Sandbox;
  close(): Promise<void>;
};

/**
 * Connects to the configured chain. `local` without an RPC URL starts the sandbox in-process and
 * settles with its demo relayers; any other node must report the network's chain id (so an anvil
 * fork of Base, or the sandbox itself, serves as `base`), and relayer keys come from the
 * environment; a gateway that does not settle itself (`settles: false`, another facilitator
 * does) needs none. It looks once for Multicall3 on the node (see `multicall3`).
 *
 * @example const chain = await connectChain(config, loadSecrets());
 */
export async function connectChain(config: Config, secrets: Secrets, { settles = true } = {}): Promise<ChainConnection> {
  const network = networks[config.network];
  const sandbox = config.network === 'local' && !config.rpcUrl ? await startSandbox() : undefined;
  try {
    const rpcUrl = sandbox?.rpcUrl ?? config.rpcUrl ?? network.defaultRpcUrl;
    if (!rpcUrl) throw new ChainUnavailableError('network local with an RPC URL needs --rpc-url of a running sandbox');
    const client = createPublicClient({ chain: network.viemChain, transport: rpcTransport(rpcUrl), pollingInterval: network.receiptPollingMs });
    let chainId: number;
    try {
      chainId = await client.getChainId();
    } catch {
      throw new ChainUnavailableError(`cannot reach the chain at ${rpcUrl}; is the node running?`);
    }
    if (chainId !== network.chainId) {
      throw new ChainUnavailableError(`the node at ${rpcUrl} is chain ${chainId}, but network ${network.name} is chain ${network.chainId}`);
    }
    const code = await client.getCode({ address: MULTICALL3 }).catch(() => {
      throw new ChainUnavailableError(`the node at ${rpcUrl} did not answer eth_getCode`);
    });
    const multicall3 = code !== undefined && code !== '0x';
    const required = () => (settles ? requireSecret(secrets, 'relayerKeys', `to settle on ${network.name}`) : []);
    const relayerKeys = secrets.relayerKeys ?? (sandbox ? sandbox.accounts.relayers.map((r) => r.privateKey) : required());
    return { network, rpcUrl, client, relayerKeys, multicall3, sandbox, close: async () => sandbox?.stop() };
  } catch (error) {
    await sandbox?.stop();
    throw error;
  }
}
