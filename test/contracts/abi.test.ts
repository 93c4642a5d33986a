import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { toFunctionSelector } from 'viem';
import { multicall3Abi, multicall3DeployedBytecode } from '../../contracts-abi/multicall3.js';
import { usdcAbi } from '../../contracts-abi/usdc.js';

test('contracts-abi/ matches a fresh build of its sources', () => {
  // Throws (exit 1, naming the stale file) when a generated file was edited or a source changed.
  execFileSync(process.execPath, ['--import', 'tsx', 'scripts/build-contracts.ts', '--check'], { stdio: 'pipe' });
});

test('the USDC ABI has both transferWithAuthorization overloads', () => {
  const overloads = usdcAbi.filter((item) => item.type === 'function' && item.name === 'transferWithAuthorization');
  assert.deepEqual(overloads.map((f) => f.inputs.length).sort(), [7, 9]);
});

test('Multicall3 runtime code dispatches aggregate3', () => {
  const aggregate3 = multicall3Abi.find((item) => item.type === 'function' && item.name === 'aggregate3');
  assert.ok(aggregate3);
  const selector = toFunctionSelector(aggregate3);
  assert.equal(selector, '0x82ad56cb');
  assert.ok(multicall3DeployedBytecode.includes(selector.slice(2)));
});
