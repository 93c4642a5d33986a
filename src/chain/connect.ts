import { type Hex, type PublicClient, createPublicClient } from 'viem';
import { MULTICALL3, type NetworkName, networks } from './networks.js';
import { rpcTransport } from './rpc-transport.js';
import { type Sandbox, startSandbox } from './sandbox/sandbox.js';
import { ChainUnavailableError } from './errors.js';
import { shownUrl } from '../log/shown-url.js';

export type ChainConnection = {
  network: (typeof networks)[keyof typeof networks];
  /** The node's URL as it may be shown (`shownUrl`: an API key in it redacted); only `client` holds the real one. */
  shownRpcUrl: string;
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

/** Which chain to connect to, and the keys to settle with: plain values (the caller reads them from its settings). */
export type ChainOptions = {
  network: NetworkName;
  /** The node; without it, `local` starts the sandbox in-process and any other network uses its default RPC URL. */
  rpcUrl?: string | undefined;
  /** The relayer keys given; without them, the sandbox's demo relayers when it was started here. */
  relayerKeys?: Hex[] | undefined;
  /**
   * Settles on this chain: when neither keys nor the sandbox's are at hand, returns the keys or throws
   * (`why` says what they are needed for). Absent for a gateway that does not settle (another facilitator does).
   */
  requireRelayerKeys?: ((why: string) => Hex[]) | undefined;
};

/**
 * Connects to the chain `options` name. `local` without an RPC URL starts the sandbox in-process and
 * settles with its demo relayers; any other node must report the network's chain id (so an anvil
 * fork of Base, or the sandbox itself, serves as `base`), and relayer keys are the ones given; a
 * gateway that does not settle itself (no `requireRelayerKeys`, another facilitator does) needs
 * none. It looks once for Multicall3 on the node (see `multicall3`).
 *
 * @example const chain = await connectChain({ network: 'base', rpcUrl: 'http://127.0.0.1:8545', relayerKeys: [key] });
 */
export async function connectChain(options: ChainOptions): Promise<ChainConnection> {
  const { rpcUrl: givenRpcUrl, relayerKeys: givenKeys, requireRelayerKeys } = options;
  const network = networks[options.network];
  const sandbox = options.network === 'local' && !givenRpcUrl ? await startSandbox() : undefined;
  try {
    const rpcUrl = sandbox?.rpcUrl ?? givenRpcUrl ?? network.defaultRpcUrl;
    if (!rpcUrl) throw new ChainUnavailableError('network local with an RPC URL needs --rpc-url of a running sandbox');
    const shown = shownUrl(rpcUrl);
    const client = createPublicClient({
      chain: network.viemChain,
      transport: rpcTransport(rpcUrl),
      pollingInterval: network.receiptPollingMs,
    });
    let chainId: number;
    try {
      chainId = await client.getChainId();
    } catch {
      throw new ChainUnavailableError(`cannot reach the chain at ${shown}; is the node running?`);
    }
    if (chainId !== network.chainId) {
      throw new ChainUnavailableError(`the node at ${shown} is chain ${chainId}, but network ${network.name} is chain ${network.chainId}`);
    }
    const code = await client.getCode({ address: MULTICALL3 }).catch(() => {
      throw new ChainUnavailableError(`the node at ${shown} did not answer eth_getCode`);
    });
    const multicall3 = code !== undefined && code !== '0x';
    const required = () => requireRelayerKeys?.(`to settle on ${network.name}`) ?? [];
    const relayerKeys = givenKeys ?? (sandbox ? sandbox.accounts.relayers.map((r) => r.privateKey) : required());
    return { network, shownRpcUrl: shown, client, relayerKeys, multicall3, sandbox, close: async () => sandbox?.stop() };
  } catch (error) {
    await sandbox?.stop();
    throw error;
  }
}
