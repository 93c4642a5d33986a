import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type PublicClient, type TestClient, createPublicClient, createTestClient, encodeFunctionData, http, parseAbi } from 'viem';
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
});
