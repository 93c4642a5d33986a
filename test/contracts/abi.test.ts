import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { toFunctionSelector } from 'viem';
import { multicall3Abi, multicall3DeployedBytecode, usdcAbi } from '../../contracts-abi/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

test('contracts-abi/ matches a fresh build of its sources', () => {
  // Exits 1, naming the stale file, when a generated file was edited or a source changed.
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/build-contracts.ts', '--check'], {
    cwd: root,
    encoding: 'utf8',
  });
  assert.equal(run.status, 0, run.stderr);
});

test('the USDC ABI has both transferWithAuthorization overloads', () => {
  const overloads = usdcAbi.filter((item) => item.type === 'function' && item.name === 'transferWithAuthorization');
  const last = overloads
    .map((f) =>
      f.inputs
        .map((input) => input.type)
        .slice(6)
        .join(','),
    )
    .sort();
  assert.deepEqual(last, ['bytes', 'uint8,bytes32,bytes32']);
});

test('Multicall3 runtime code dispatches aggregate3', () => {
  const aggregate3 = multicall3Abi.find((item) => item.type === 'function' && item.name === 'aggregate3');
  assert.ok(aggregate3);
  const selector = toFunctionSelector(aggregate3);
  assert.equal(selector, '0x82ad56cb');
  assert.ok(multicall3DeployedBytecode.length > 2);
  assert.ok(multicall3DeployedBytecode.includes(selector.slice(2)));
});
