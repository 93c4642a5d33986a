import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  type AbiFunction,
  type Address,
  type Hex,
  type PublicClient,
  type TestClient,
  createPublicClient,
  createTestClient,
  encodeAbiParameters,
  encodeFunctionData,
  http,
  parseAbi,
  toFunctionSignature,
  multicall3Abi as viemMulticall3Abi,
} from 'viem';
import { multicall3Abi, multicall3DeployedBytecode } from '../../contracts-abi/multicall3.js';
import { MULTICALL3 } from '../../src/chain/networks.js';
import { type Anvil, startAnvil } from '../../src/chain/sandbox/anvil.js';

/** Calls Multicall3 does not implement, so calling them on it reverts: a ready-made failing target. */
const missingAbi = parseAbi(['function balanceOf(address) view returns (uint256)']);

describe('contracts/Multicall3.sol planted on a bare anvil', () => {
  let anvil: Anvil;
  let client: PublicClient;
  let testClient: TestClient;

  before(async () => {
    anvil = await startAnvil({ chainId: 8453 });
    client = createPublicClient({ transport: http(anvil.rpcUrl) });
    testClient = createTestClient({ mode: 'anvil', transport: http(anvil.rpcUrl) });
    await testClient.setCode({ address: MULTICALL3, bytecode: multicall3DeployedBytecode });
  });
  after(() => anvil.stop());

  test("viem's multicall reports each call's outcome when failures are allowed", async () => {
    const results = await client.multicall({
      multicallAddress: MULTICALL3,
      allowFailure: true,
      contracts: [
        { address: MULTICALL3, abi: multicall3Abi, functionName: 'getChainId' },
        { address: MULTICALL3, abi: missingAbi, functionName: 'balanceOf', args: [MULTICALL3] },
      ],
    });
    assert.deepEqual(results[0], { status: 'success', result: 8453n });
    assert.equal(results[1]?.status, 'failure');
  });

  test('aggregate3 reverts the batch when a call that may not fail does', async () => {
    const failing = encodeFunctionData({ abi: missingAbi, functionName: 'balanceOf', args: [MULTICALL3] });
    await assert.rejects(
      client.simulateContract({
        address: MULTICALL3,
        abi: multicall3Abi,
        functionName: 'aggregate3',
        args: [[{ target: MULTICALL3, allowFailure: false, callData: failing }]],
      }),
      /Multicall3: call failed/,
    );
  });

  test('the view helpers read the block and accounts', async () => {
    await testClient.setBalance({ address: MULTICALL3, value: 12345n });
    // anvil runs calls against its genesis block with timestamp 1, so move past it first.
    await testClient.mine({ blocks: 1 });
    const read = (functionName: 'getBlockNumber' | 'getCurrentBlockTimestamp' | 'getBasefee' | 'getChainId') =>
      client.readContract({ address: MULTICALL3, abi: multicall3Abi, functionName });
    const block = await client.getBlock();
    assert.equal(await read('getBlockNumber'), block.number);
    assert.equal(await read('getCurrentBlockTimestamp'), block.timestamp);
    assert.equal(await read('getBasefee'), block.baseFeePerGas);
    assert.equal(await read('getChainId'), 8453n);
    const balance = await client.readContract({
      address: MULTICALL3,
      abi: multicall3Abi,
      functionName: 'getEthBalance',
      args: [MULTICALL3],
    });
    assert.equal(balance, 12345n);
  });

  test('it answers every function of viem’s multicall3Abi and of the canonical Multicall3 interface', () => {
    const ours = new Set(multicall3Abi.filter((f) => f.type === 'function').map((f) => toFunctionSignature(f as AbiFunction)));
    const canonical = [
      ...viemMulticall3Abi.map((f) => toFunctionSignature(f as AbiFunction)),
      ...parseAbi(CANONICAL).map((f) => toFunctionSignature(f as AbiFunction)),
    ];
    assert.deepEqual(
      canonical.filter((signature) => !ours.has(signature)),
      [],
    );
  });

  const ok = encodeFunctionData({ abi: multicall3Abi, functionName: 'getChainId' });
  const failing = encodeFunctionData({ abi: missingAbi, functionName: 'balanceOf', args: [MULTICALL3] });
  const chainId = encodeAbiParameters([{ type: 'uint256' }], [8453n]);
  const sender: Address = '0x000000000000000000000000000000000000a11c';
  const call = async (functionName: string, args: unknown[], value?: bigint) => {
    const request = { address: MULTICALL3, abi: multicall3Abi, functionName, args, account: sender, ...(value ? { value } : {}) };
    return client.simulateContract(request as never) as Promise<{ result: unknown }>;
  };

  test('aggregate returns the block number and every result, and reverts when any call fails', async () => {
    const { result } = await call('aggregate', [[{ target: MULTICALL3, callData: ok }]]);
    // An eth_call runs in the latest block's context.
    assert.deepEqual(result, [await client.getBlockNumber(), [chainId]]);
    await assert.rejects(call('aggregate', [[{ target: MULTICALL3, callData: failing }]]), /Multicall3: call failed/);
  });

  test('tryAggregate reports each call’s outcome, or reverts when success is required', async () => {
    const calls = [
      { target: MULTICALL3, callData: ok },
      { target: MULTICALL3, callData: failing },
    ];
    const { result } = await call('tryAggregate', [false, calls]);
    assert.deepEqual(result, [
      { success: true, returnData: chainId },
      { success: false, returnData: '0x' },
    ]);
    await assert.rejects(call('tryAggregate', [true, [{ target: MULTICALL3, callData: failing }]]), /Multicall3: call failed/);
  });

  test('tryBlockAndAggregate and blockAndAggregate add the block number and hash', async () => {
    const calls = [{ target: MULTICALL3, callData: ok }];
    const withFailure = [...calls, { target: MULTICALL3, callData: failing }];
    const tried = (await call('tryBlockAndAggregate', [false, withFailure])).result as [bigint, Hex, unknown];
    assert.equal(tried[0], await client.getBlockNumber());
    assert.match(tried[1], /^0x[0-9a-f]{64}$/);
    assert.deepEqual(tried[2], [
      { success: true, returnData: chainId },
      { success: false, returnData: '0x' },
    ]);
    const all = (await call('blockAndAggregate', [calls])).result as [bigint, Hex, unknown];
    assert.deepEqual(all[2], [{ success: true, returnData: chainId }]);
    await assert.rejects(call('blockAndAggregate', [[{ target: MULTICALL3, callData: failing }]]), /Multicall3: call failed/);
  });

  test('aggregate3Value sends each call its value and wants them to add up to msg.value', async () => {
    await testClient.setBalance({ address: sender, value: 10n ** 18n });
    const payee = '0x000000000000000000000000000000000000bEEF';
    const calls = [{ target: payee, allowFailure: false, value: 7n, callData: '0x' as Hex }];
    const { result } = await call('aggregate3Value', [calls], 7n);
    assert.deepEqual(result, [{ success: true, returnData: '0x' }]);
    await assert.rejects(call('aggregate3Value', [calls], 8n), /Multicall3: value mismatch/);
  });

  test('the block getters: hash, last hash, coinbase, difficulty (prevrandao) and gas limit', async () => {
    await testClient.mine({ blocks: 2 });
    const read = <T>(functionName: string, args: unknown[] = []) =>
      client.readContract({ address: MULTICALL3, abi: multicall3Abi, functionName, args } as never) as Promise<T>;
    const latest = await client.getBlock();
    const previous = await client.getBlock({ blockNumber: latest.number - 1n });
    assert.equal(await read<Hex>('getBlockHash', [previous.number]), previous.hash);
    assert.equal(await read<Hex>('getLastBlockHash'), previous.hash, 'the hash of the block before the one the call runs in');
    assert.match(await read<Address>('getCurrentBlockCoinbase'), /^0x[0-9a-fA-F]{40}$/);
    assert.equal(typeof (await read<bigint>('getCurrentBlockDifficulty')), 'bigint');
    assert.ok((await read<bigint>('getCurrentBlockGasLimit')) > 0n);
  });
});

/** The canonical Multicall3's interface (mds1/multicall), beyond what viem's own ABI lists. */
const CANONICAL = [
  'struct Call { address target; bytes callData; }',
  'struct Call3 { address target; bool allowFailure; bytes callData; }',
  'struct Call3Value { address target; bool allowFailure; uint256 value; bytes callData; }',
  'struct Result { bool success; bytes returnData; }',
  'function aggregate(Call[] calls) payable returns (uint256 blockNumber, bytes[] returnData)',
  'function aggregate3(Call3[] calls) payable returns (Result[] returnData)',
  'function aggregate3Value(Call3Value[] calls) payable returns (Result[] returnData)',
  'function blockAndAggregate(Call[] calls) payable returns (uint256 blockNumber, bytes32 blockHash, Result[] returnData)',
  'function tryAggregate(bool requireSuccess, Call[] calls) payable returns (Result[] returnData)',
  'function tryBlockAndAggregate(bool requireSuccess, Call[] calls) payable ' +
    'returns (uint256 blockNumber, bytes32 blockHash, Result[] returnData)',
  'function getBasefee() view returns (uint256 basefee)',
  'function getBlockHash(uint256 blockNumber) view returns (bytes32 blockHash)',
  'function getBlockNumber() view returns (uint256 blockNumber)',
  'function getChainId() view returns (uint256 chainid)',
  'function getCurrentBlockCoinbase() view returns (address coinbase)',
  'function getCurrentBlockDifficulty() view returns (uint256 difficulty)',
  'function getCurrentBlockGasLimit() view returns (uint256 gaslimit)',
  'function getCurrentBlockTimestamp() view returns (uint256 timestamp)',
  'function getEthBalance(address addr) view returns (uint256 balance)',
  'function getLastBlockHash() view returns (bytes32 blockHash)',
] as const;
