import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { type Hex, BaseError, createPublicClient, createWalletClient, hashDomain, http, parseSignature, toHex } from 'viem';
import { multicall3Abi } from '../../contracts-abi/multicall3.js';
import { usdcAbi } from '../../contracts-abi/usdc.js';
import { transferWithAuthorizationTypes, usdcDomain } from '../../src/chain/eip3009.js';
import { BASE_USDC, MULTICALL3, networks } from '../../src/chain/networks.js';
import type { DemoAccount } from '../../src/chain/sandbox/accounts.js';
import { type Sandbox, startSandbox } from '../../src/chain/sandbox/sandbox.js';

let sandbox: Sandbox;
let publicClient: ReturnType<typeof createPublicClient>;
let snapshot: Hex;

const rpc = (method: string, params: unknown[] = []) =>
  publicClient.request({ method: method as 'eth_chainId', params: params as [] }) as Promise<unknown>;

before(async () => {
  sandbox = await startSandbox();
  publicClient = createPublicClient({ chain: networks.local.viemChain, transport: http(sandbox.rpcUrl) });
  snapshot = (await rpc('evm_snapshot')) as Hex;
});
beforeEach(async () => {
  // evm_revert consumes the snapshot, so take a fresh one each time.
  await rpc('evm_revert', [snapshot]);
  snapshot = (await rpc('evm_snapshot')) as Hex;
});
after(() => sandbox.stop());

const balanceOf = (address: Hex) =>
  publicClient.readContract({ address: BASE_USDC, abi: usdcAbi, functionName: 'balanceOf', args: [address] });

async function authorize(payer: DemoAccount, to: Hex, value: bigint, window: { validAfter?: bigint; validBefore?: bigint } = {}) {
  const now = BigInt(Math.floor(Date.now() / 1000));
  const message = {
    from: payer.address,
    to,
    value,
    validAfter: window.validAfter ?? 0n,
    validBefore: window.validBefore ?? now + 300n,
    nonce: toHex(crypto.getRandomValues(new Uint8Array(32))),
  };
  const signature = await payer.signTypedData({
    domain: usdcDomain(networks.base),
    types: transferWithAuthorizationTypes,
    primaryType: 'TransferWithAuthorization',
    message,
  });
  return { message, signature };
}

function relayer() {
  const account = sandbox.accounts.relayers[0]!;
  return createWalletClient({ account, chain: networks.local.viemChain, transport: http(sandbox.rpcUrl) });
}

async function submitBytes(auth: Awaited<ReturnType<typeof authorize>>) {
  const { from, to, value, validAfter, validBefore, nonce } = auth.message;
  const hash = await relayer().writeContract({
    address: BASE_USDC,
    abi: usdcAbi,
    functionName: 'transferWithAuthorization',
    args: [from, to, value, validAfter, validBefore, nonce, auth.signature],
  });
  return publicClient.waitForTransactionReceipt({ hash, pollingInterval: 5 });
}

async function revertReason(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof BaseError);
    return `${error.shortMessage}\n${error.message}`;
  }
  assert.fail('expected a revert');
}

describe('local Base sandbox', () => {
  test('is Base as far as a signature can tell: chain id, address, and EIP-712 domain', async () => {
    assert.equal(await publicClient.getChainId(), 8453);
    assert.equal(sandbox.usdc, '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913');
    const read = <F extends 'name' | 'symbol' | 'decimals' | 'version' | 'DOMAIN_SEPARATOR'>(functionName: F) =>
      publicClient.readContract({ address: BASE_USDC, abi: usdcAbi, functionName });
    assert.equal(await read('name'), 'USD Coin');
    assert.equal(await read('symbol'), 'USDC');
    assert.equal(await read('decimals'), 6);
    assert.equal(await read('version'), '2');
    const expected = hashDomain({
      domain: { name: 'USD Coin', version: '2', chainId: 8453n, verifyingContract: BASE_USDC },
      types: {
        EIP712Domain: [
          { name: 'name', type: 'string' },
          { name: 'version', type: 'string' },
          { name: 'chainId', type: 'uint256' },
          { name: 'verifyingContract', type: 'address' },
        ],
      },
    });
    assert.equal(await read('DOMAIN_SEPARATOR'), expected);
  });

  test('payers hold USDC and no ETH; relayers hold ETH; payees start empty', async () => {
    const [payer] = sandbox.accounts.payers;
    assert.equal(await balanceOf(payer!.address), sandbox.payerUsdc);
    assert.equal(await publicClient.getBalance({ address: payer!.address }), 0n);
    assert.ok((await publicClient.getBalance({ address: sandbox.accounts.relayers[0]!.address })) > 0n);
    assert.equal(await balanceOf(sandbox.accounts.payees[0]!.address), 0n);
  });

  test('a relayer settles an authorization through the bytes overload; a replay reverts', async () => {
    const payer = sandbox.accounts.payers[1]!;
    const payee = sandbox.accounts.payees[0]!.address;
    const auth = await authorize(payer, payee, 1_250_000n);
    const receipt = await submitBytes(auth);
    assert.equal(receipt.status, 'success');
    assert.equal(await balanceOf(payee), 1_250_000n);
    assert.equal(await balanceOf(payer.address), sandbox.payerUsdc - 1_250_000n);
    assert.equal(
      await publicClient.readContract({
        address: BASE_USDC,
        abi: usdcAbi,
        functionName: 'authorizationState',
        args: [payer.address, auth.message.nonce],
      }),
      true,
    );
    assert.match(await revertReason(submitBytes(auth)), /FiatTokenV2: authorization is used or canceled/);
    assert.equal(await balanceOf(payee), 1_250_000n);
  });

  test('a relayer settles through the (v, r, s) overload', async () => {
    const payer = sandbox.accounts.payers[2]!;
    const payee = sandbox.accounts.payees[1]!.address;
    const auth = await authorize(payer, payee, 42n);
    const { v, r, s } = parseSignature(auth.signature);
    const { from, to, value, validAfter, validBefore, nonce } = auth.message;
    const hash = await relayer().writeContract({
      address: BASE_USDC,
      abi: usdcAbi,
      functionName: 'transferWithAuthorization',
      args: [from, to, value, validAfter, validBefore, nonce, Number(v), r, s],
    });
    assert.equal((await publicClient.waitForTransactionReceipt({ hash, pollingInterval: 5 })).status, 'success');
    assert.equal(await balanceOf(payee), 42n);
  });

  test('expired, not-yet-valid and wrongly signed authorizations revert with Circle’s messages', async () => {
    const payer = sandbox.accounts.payers[3]!;
    const payee = sandbox.accounts.payees[0]!.address;
    const now = BigInt(Math.floor(Date.now() / 1000));
    const expired = await authorize(payer, payee, 1n, { validBefore: now - 10n });
    assert.match(await revertReason(submitBytes(expired)), /FiatTokenV2: authorization is expired/);
    const early = await authorize(payer, payee, 1n, { validAfter: now + 3600n, validBefore: now + 7200n });
    assert.match(await revertReason(submitBytes(early)), /FiatTokenV2: authorization is not yet valid/);
    const tampered = await authorize(payer, payee, 1n);
    tampered.message.value = 2n;
    assert.match(await revertReason(submitBytes(tampered)), /FiatTokenV2: invalid signature/);
    assert.equal(await balanceOf(payee), 0n);
  });

  test('a signature for Base Sepolia’s domain name ("USDC") is rejected here', async () => {
    const payer = sandbox.accounts.payers[4]!;
    const auth = await authorize(payer, sandbox.accounts.payees[0]!.address, 1n);
    auth.signature = await payer.signTypedData({
      domain: { ...usdcDomain(networks.base), name: 'USDC' },
      types: transferWithAuthorizationTypes,
      primaryType: 'TransferWithAuthorization',
      message: auth.message,
    });
    assert.match(await revertReason(submitBytes(auth)), /FiatTokenV2: invalid signature/);
  });

  test('Multicall3 answers aggregate3 at its canonical address, with per-call failure', async () => {
    const payer = sandbox.accounts.payers[0]!.address;
    const results = await publicClient.multicall({
      multicallAddress: MULTICALL3,
      allowFailure: true,
      contracts: [
        { address: BASE_USDC, abi: usdcAbi, functionName: 'balanceOf', args: [payer] },
        { address: BASE_USDC, abi: usdcAbi, functionName: 'authorizationState', args: [payer, toHex(1n, { size: 32 })] },
        { address: BASE_USDC, abi: usdcAbi, functionName: 'transferFrom', args: [payer, payer, 1n] },
      ],
    });
    assert.deepEqual(results[0], { status: 'success', result: sandbox.payerUsdc });
    assert.deepEqual(results[1], { status: 'success', result: false });
    assert.equal(results[2]?.status, 'failure');
    const timestamp = await publicClient.readContract({
      address: MULTICALL3,
      abi: multicall3Abi,
      functionName: 'getCurrentBlockTimestamp',
    });
    assert.ok(timestamp > 0n);
  });

  test('the proxy admin is kept apart from the token, as on Base', async () => {
    const admin = createWalletClient({
      account: sandbox.accounts.usdcProxyAdmin,
      chain: networks.local.viemChain,
      transport: http(sandbox.rpcUrl),
    });
    await rpc('anvil_setBalance', [sandbox.accounts.usdcProxyAdmin.address, toHex(10n ** 18n)]);
    const reason = await revertReason(
      admin.writeContract({ address: BASE_USDC, abi: usdcAbi, functionName: 'transfer', args: [admin.account.address, 0n] }),
    );
    assert.match(reason, /Cannot call fallback function from the proxy admin/);
  });
});

describe('sandbox lifecycle', () => {
  test('stop() ends the anvil process', async () => {
    const other = await startSandbox({ payers: 1 });
    assert.doesNotThrow(() => process.kill(other.anvil.pid, 0));
    await other.stop();
    await new Promise((r) => setTimeout(r, 50));
    assert.throws(() => process.kill(other.anvil.pid, 0), /ESRCH/);
  });
});
