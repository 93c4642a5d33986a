import {
  type Address,
  type Hex,
  createTestClient,
  encodeFunctionData,
  getAddress,
  http,
  keccak256,
  pad,
  parseEther,
  publicActions,
  slice,
  stringToHex,
} from 'viem';
import { multicall3DeployedBytecode } from '../../../contracts-abi/multicall3.js';
import { usdcAbi } from '../../../contracts-abi/usdc.js';
import { BASE_USDC, MULTICALL3, networks } from '../networks.js';
import { type DemoAccount, type SandboxAccounts, sandboxAccounts } from './accounts.js';
import { type Anvil, startAnvil } from './anvil.js';
import { libraryRuntimeAt, linkDeployedBytecode, loadCircleArtifact } from './artifacts.js';
import { SandboxError } from './errors.js';

export type SandboxOptions = {
  /** Fixed RPC port; a free one by default. */
  port?: number;
  payers?: number;
  relayers?: number;
  payees?: number;
  /** USDC minted to each payer, in atomic units (default 10,000 USDC). */
  payerUsdc?: bigint;
  /** Plant Multicall3 at its canonical address (default true); false is a node that lacks it. */
  multicall3?: boolean;
};

/** A local Base: anvil with chain id 8453 and Circle's USDC at Base's address. */
export type Sandbox = {
  rpcUrl: string;
  network: typeof networks.local;
  usdc: Address;
  accounts: SandboxAccounts;
  /** USDC each payer was given, atomic units. */
  payerUsdc: bigint;
  anvil: Anvil;
  /** Wall time from spawning anvil to USDC answering `balanceOf`. */
  startupMs: number;
  /** Mines a block every `seconds` (2: Base's block time), or one per transaction (0, as it starts). */
  mineEvery(seconds: number): Promise<void>;
  stop(): Promise<void>;
};

// EIP-1967-style slots of Circle's AdminUpgradeabilityProxy (keccak of its zos labels).
const IMPLEMENTATION_SLOT = '0x7050c9e0f4ca769c69bd3a8ef740bc37934f8e2c036e5a723fd8ee048ed3f8c3';
const ADMIN_SLOT = '0x10d6a54a4754c8869d6886b5f5d7fbfa5b4522237ea5c60d11bc4e7a1ff9390b';

const placeAt = (label: string): Address => getAddress(slice(keccak256(stringToHex(`turnpike sandbox ${label}`)), 12));

/**
 * Starts anvil as Base (chain id 8453), puts Circle's real FiatTokenV2_2 behind a FiatTokenProxy
 * at Base's USDC address initialized exactly like Base USDC, plants Multicall3 at its canonical
 * address, and funds the demo accounts. Signatures made for real Base USDC are valid here.
 *
 * @example
 * const sandbox = await startSandbox();
 * const payer = sandbox.accounts.payers[0]; // holds 10,000 USDC, no ETH
 * await sandbox.stop();
 */
export async function startSandbox(options: SandboxOptions = {}): Promise<Sandbox> {
  const started = performance.now();
  const accounts = sandboxAccounts({
    payers: options.payers ?? 10,
    relayers: options.relayers ?? 4,
    payees: options.payees ?? 2,
  });
  const network = networks.local;
  const anvil = await startAnvil({ chainId: network.chainId, port: options.port });
  try {
    const client = createTestClient({ mode: 'anvil', transport: http(anvil.rpcUrl, { batch: true }) }).extend(publicActions);
    await plantContracts(client, accounts, options.multicall3 ?? true);
    const payerUsdc = options.payerUsdc ?? 10_000_000_000n;
    await initializeUsdc(client, accounts, payerUsdc);

    const ready = await client.readContract({
      address: BASE_USDC,
      abi: usdcAbi,
      functionName: 'balanceOf',
      args: [accounts.payers[0]?.address ?? accounts.usdcOwner.address],
    });
    if (accounts.payers.length > 0 && ready !== payerUsdc) throw new SandboxError('USDC was not minted to the payers');
    return {
      rpcUrl: anvil.rpcUrl,
      network,
      usdc: BASE_USDC,
      accounts,
      payerUsdc,
      anvil,
      startupMs: performance.now() - started,
      async mineEvery(seconds) {
        if (seconds === 0) await client.request({ method: 'evm_setAutomine', params: [true] });
        else await client.request({ method: 'evm_setIntervalMining', params: [seconds] });
      },
      stop: anvil.stop,
    };
  } catch (error) {
    await anvil.stop();
    throw error;
  }
}

type SandboxClient = ReturnType<typeof createTestClient> & ReturnType<typeof publicActions>;

/** Code and storage go in by cheat codes: no constructor of these contracts does anything else. */
async function plantContracts(client: SandboxClient, accounts: SandboxAccounts, multicall3: boolean) {
  const checker = placeAt('SignatureChecker');
  const implementation = placeAt('FiatTokenV2_2');
  const fiatToken = linkDeployedBytecode(loadCircleArtifact('FiatTokenV2_2'), { SignatureChecker: checker });
  await Promise.all([
    client.setCode({ address: checker, bytecode: libraryRuntimeAt(loadCircleArtifact('SignatureChecker'), checker) }),
    client.setCode({ address: implementation, bytecode: fiatToken }),
    client.setCode({ address: BASE_USDC, bytecode: loadCircleArtifact('FiatTokenProxy').deployedBytecode }),
    client.setStorageAt({ address: BASE_USDC, index: IMPLEMENTATION_SLOT, value: pad(implementation) }),
    client.setStorageAt({ address: BASE_USDC, index: ADMIN_SLOT, value: pad(accounts.usdcProxyAdmin.address) }),
    ...(multicall3 ? [client.setCode({ address: MULTICALL3, bytecode: multicall3DeployedBytecode })] : []),
    client.setBalance({ address: accounts.usdcOwner.address, value: parseEther('10') }),
    client.setBalance({ address: accounts.treasury.address, value: parseEther('10') }),
    ...accounts.relayers.map((r) => client.setBalance({ address: r.address, value: parseEther('1000') })),
  ]);
}

/** Initializes the token through the proxy exactly as Base USDC was, then mints to the payers. */
async function initializeUsdc(client: SandboxClient, accounts: SandboxAccounts, payerUsdc: bigint) {
  const owner = accounts.usdcOwner.address;
  const calls: Hex[] = [
    encodeFunctionData({
      abi: usdcAbi,
      functionName: 'initialize',
      args: ['USD Coin', 'USDC', 'USD', 6, owner, owner, owner, owner],
    }),
    encodeFunctionData({ abi: usdcAbi, functionName: 'initializeV2', args: ['USD Coin'] }),
    encodeFunctionData({ abi: usdcAbi, functionName: 'initializeV2_1', args: [owner] }),
    encodeFunctionData({ abi: usdcAbi, functionName: 'initializeV2_2', args: [[], 'USDC'] }),
    encodeFunctionData({
      abi: usdcAbi,
      functionName: 'configureMinter',
      args: [owner, payerUsdc * BigInt(accounts.payers.length)],
    }),
    ...accounts.payers.map((p) => encodeFunctionData({ abi: usdcAbi, functionName: 'mint', args: [p.address, payerUsdc] })),
  ];
  await sendInOneBlock(client, accounts.usdcOwner, BASE_USDC, calls);
}

/**
 * Signs calls from one fresh account with consecutive nonces and mines them as one block: the
 * order is fixed by the nonces, and one block costs one round of mining instead of one per call.
 */
async function sendInOneBlock(client: SandboxClient, from: DemoAccount, to: Address, calls: Hex[]) {
  const signed = await Promise.all(
    calls.map((data, nonce) =>
      from.signTransaction({
        chainId: networks.local.chainId,
        type: 'eip1559',
        to,
        data,
        nonce,
        gas: 1_000_000n,
        maxFeePerGas: 10_000_000_000n,
        maxPriorityFeePerGas: 0n,
      }),
    ),
  );
  await client.setAutomine(false);
  const hashes = await Promise.all(signed.map((serializedTransaction) => client.sendRawTransaction({ serializedTransaction })));
  await client.mine({ blocks: 1 });
  await client.setAutomine(true);
  const receipts = await Promise.all(hashes.map((hash) => client.getTransactionReceipt({ hash })));
  const failed = receipts.findIndex((r) => r.status !== 'success');
  if (failed >= 0) throw new SandboxError(`sandbox USDC set-up call #${failed} reverted (tx ${hashes[failed]})`);
}
