import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { x402Client } from '@x402/core/client';
import type { PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { createPublicClient } from 'viem';
import { usdcAbi } from '../../contracts-abi/usdc.js';
import { BASE_USDC, networks } from '../../src/chain/networks.js';
import { rpcTransport } from '../../src/chain/rpc-transport.js';
import { type Sandbox, startSandbox } from '../../src/chain/sandbox/sandbox.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { POSTGRES_URL, backends, freshSchema } from '../helpers/stores.js';

const bin = path.resolve('dist/src/cli/main.js');
const ADMIN = 'admin-key-for-the-multi-instance-tests-01234';
const RATE_LIMIT = 40;
const postgres = backends.find((b) => b.name === 'postgres')!;
let sandbox: Sandbox;
let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;
const schema = freshSchema();
const storeUrl = `${POSTGRES_URL}${POSTGRES_URL.includes('?') ? '&' : '?'}schema=${schema}&pool=4`;
const running: { kill(signal: NodeJS.Signals): void; done: Promise<unknown> }[] = [];

/** Starts one turnpike instance on the shared PostgreSQL with the given relayer key. */
function spawnInstance(relayer: number, upstreamPath: string) {
  const child = spawn(
    process.execPath,
    [
      bin,
      'wrap',
      '--upstream',
      `${upstream.url}${upstreamPath}`,
      '--network',
      'base',
      '--rpc-url',
      sandbox.rpcUrl,
      '--pay-to',
      sandbox.accounts.payees[0]!.address,
      '--price',
      '0.01',
      '--upstream-timeout',
      '30',
      '--port',
      '0',
      '--log-level',
      'silent',
    ],
    {
      env: {
        PATH: process.env.PATH,
        TURNPIKE_STORE_URL: storeUrl,
        TURNPIKE_RELAYER_KEY: sandbox.accounts.relayers[relayer]!.privateKey,
        TURNPIKE_TREASURY_KEY: sandbox.accounts.treasury.privateKey,
        TURNPIKE_ADMIN_KEY: ADMIN,
        TURNPIKE_OPERATORS_ALLOW_PRIVATE_UPSTREAMS: 'true',
        TURNPIKE_OPERATORS_MIN_WITHDRAWAL_USD: '0.01',
        TURNPIKE_CREDITS_RATE_LIMIT_PER_MINUTE: String(RATE_LIMIT),
      },
    },
  );
  let out = '';
  child.stdout.on('data', (c) => (out += c));
  child.stderr.on('data', (c) => (out += c));
  const done = new Promise<number | null>((resolve) => child.on('exit', resolve));
  running.push({ kill: (s) => child.kill(s), done });
  return { child, done, output: () => out };
}

/** One instance, once it serves. */
async function instance(relayer: number, upstreamPath = '/mcp') {
  const { child, done, output } = spawnInstance(relayer, upstreamPath);
  const ready = /paying MCP endpoint at (\S+)\/mcp /;
  while (!ready.test(output())) {
    if (child.exitCode !== null) assert.fail(`instance exited: ${output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: ready.exec(output())![1]!, kill: (signal: NodeJS.Signals) => child.kill(signal), done };
}

type RpcAnswer = { result?: { isError?: boolean; structuredContent?: PaymentRequired; _meta?: Record<string, any> } };
async function call(url: string, init: { payment?: unknown; apiKey?: string; tool?: string } = {}) {
  const params = { name: init.tool ?? 'count', arguments: {}, ...(init.payment ? { _meta: { 'x402/payment': init.payment } } : {}) };
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      ...(init.apiKey ? { authorization: `Bearer ${init.apiKey}` } : {}),
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params }),
  });
  return { status: res.status, body: (await res.json()) as RpcAnswer };
}
async function paymentFor(url: string, payer: number) {
  const challenge = await call(url);
  return new x402Client()
    .register('eip155:8453', new ExactEvmScheme(sandbox.accounts.payers[payer]!))
    .createPaymentPayload(challenge.body.result!.structuredContent!);
}
const api = async (base: string, method: string, route: string, key: string, body?: unknown) => {
  const res = await fetch(`${base}${route}`, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
};

describe('several turnpike instances on one PostgreSQL', { skip: postgres.skip, timeout: 120_000 }, () => {
  let a: Awaited<ReturnType<typeof instance>>;
  let b: Awaited<ReturnType<typeof instance>>;
  const usdcOf = (address: `0x${string}`) =>
    createPublicClient({ chain: networks.local.viemChain, transport: rpcTransport(sandbox.rpcUrl) }).readContract({
      address: BASE_USDC,
      abi: usdcAbi,
      functionName: 'balanceOf',
      args: [address],
    });

  before(async () => {
    sandbox = await startSandbox();
    upstream = await startCounterUpstream();
    a = await instance(0);
    b = await instance(1);
  });
  after(async () => {
    for (const r of running) r.kill('SIGINT');
    await Promise.all(running.map((r) => r.done));
    await upstream?.close();
    await sandbox?.stop();
  });

  test('one payment sent to both instances at once: the tool runs once, it settles once', async () => {
    const payment = await paymentFor(`${a.url}/mcp`, 0);
    const payee = sandbox.accounts.payees[0]!.address;
    const [before, runs] = [await usdcOf(payee), upstream.runs()];
    const answers = await Promise.all(Array.from({ length: 16 }, (_, i) => call(`${(i % 2 ? a : b).url}/mcp`, { payment })));
    // Copies that came after the result was kept get it again, on either instance: one receipt.
    const receipts = new Set(
      answers.flatMap((x) => (x.body.result?._meta?.['x402/payment-response']?.success ? [JSON.stringify(x.body.result)] : [])),
    );
    assert.equal(receipts.size, 1);
    assert.equal(upstream.runs() - runs, 1);
    assert.equal(await usdcOf(payee), before + 10_000n);
  });

  test('credits debited on both instances at once never overdraw the key', async () => {
    const key = await api(a.url, 'POST', '/admin/keys', ADMIN, { name: 'shared', usd: '0.1' });
    assert.equal(key.status, 201);
    const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => call(`${(i % 2 ? a : b).url}/mcp`, { apiKey: key.body.key })));
    assert.equal(answers.filter((x) => x.body.result?._meta?.['turnpike/credits']).length, 10);
    assert.equal((await api(b.url, 'GET', `/admin/keys/${key.body.id}`, ADMIN)).body.balance, '0');
  });

  test('a key’s rate limit holds across instances: 60 calls in one minute through both, 40 served, the rest 429', async () => {
    // All inside one minute window: a burst that spans the turn of the minute (slow on a loaded machine) is made again, with a new key.
    const minute = () => Math.floor(Date.now() / 60_000);
    const burst = async () => {
      const key = await api(a.url, 'POST', '/admin/keys', ADMIN, { name: 'busy', usd: '1' });
      const first = minute();
      const answers = await Promise.all(Array.from({ length: 60 }, (_, i) => call(`${(i % 2 ? a : b).url}/mcp`, { apiKey: key.body.key })));
      return minute() === first ? { key, answers } : undefined;
    };
    let made: Awaited<ReturnType<typeof burst>>;
    do made = await burst();
    while (!made);
    const { key, answers } = made;
    assert.equal(answers.filter((x) => x.body.result?._meta?.['turnpike/credits']).length, RATE_LIMIT);
    const limited = answers.filter((x) => x.status === 429);
    assert.equal(limited.length, 60 - RATE_LIMIT);
    assert.match(JSON.stringify(limited[0]!.body), /rate_limited/);
    assert.equal((await api(b.url, 'GET', `/admin/keys/${key.body.id}`, ADMIN)).body.balance, String(1_000_000 - RATE_LIMIT * 10_000));
  });

  test('a withdrawal cannot be taken twice through two instances; the treasury sends from one', async () => {
    const op = await api(a.url, 'POST', '/admin/operators', ADMIN, {
      email: 'multi@example.com',
      name: 'multi',
      payoutAddress: sandbox.accounts.payees[1]!.address,
    });
    const server = await api(b.url, 'POST', '/operator/servers', op.body.key, {
      slug: 'shared',
      name: 'shared',
      upstream: `${upstream.url}/mcp`,
      custody: 'platform',
      plan: { type: 'per_call', default: '0.5' },
    });
    assert.equal(server.status, 201, JSON.stringify(server.body));
    const paid = await call(`${a.url}/mcp/shared`, { payment: await paymentFor(`${a.url}/mcp/shared`, 1) });
    assert.equal(paid.body.result?._meta?.['x402/payment-response']?.success, true, JSON.stringify(paid.body));
    const deadline = Date.now() + 10_000;
    while ((await api(b.url, 'GET', '/operator/balance', op.body.key)).body.usdcAvailable !== '500000') {
      if (Date.now() > deadline) assert.fail('the revenue never became available');
      await new Promise((r) => setTimeout(r, 100));
    }
    const payout = sandbox.accounts.payees[1]!.address;
    const before = await usdcOf(payout);
    const attempts = await Promise.all(
      [a, b, a, b].map((x, i) => api(x.url, 'POST', '/operator/withdrawals', op.body.key, { usd: '0.4', idempotencyKey: `w${i}` })),
    );
    assert.equal(attempts.filter((x) => x.status === 201).length, 1, JSON.stringify(attempts.map((x) => x.body)));
    assert.equal(attempts.filter((x) => x.body.error === 'insufficient_balance').length, 3);
    while ((await usdcOf(payout)) === before) {
      if (Date.now() > deadline + 10_000) assert.fail('the withdrawal was never sent');
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(await usdcOf(payout), before + 400_000n);
  });

  test('a second instance with the same relayer key is refused at start', async () => {
    const clash = spawnInstance(0, '/mcp');
    assert.notEqual(await clash.done, 0);
    assert.match(
      clash.output(),
      /relayer 0x[0-9a-fA-F]{40} is sending for another turnpike instance on this store; give each instance its own TURNPIKE_RELAYER_KEY/,
    );
  });

  test('an instance killed during a paid call: the next instance to start finishes its journal entry', async () => {
    const doomed = await instance(2, '/hang');
    const payment = await paymentFor(`${doomed.url}/mcp`, 2);
    void call(`${doomed.url}/mcp`, { payment }).catch(() => undefined);
    const store = await openPostgresStore({ url: POSTGRES_URL, schema, max: 2 });
    try {
      const deadline = Date.now() + 10_000;
      while ((await store.journal.unfinished()).length === 0) {
        if (Date.now() > deadline) assert.fail('the payment was never held');
        await new Promise((r) => setTimeout(r, 50));
      }
      doomed.kill('SIGKILL');
      await doomed.done;
      await instance(3);
      const [row] = await store.journal.unfinished();
      assert.equal(row, undefined, 'nothing left unfinished');
      const auth = (payment.payload as { authorization: { from: string; nonce: string } }).authorization;
      const record = await store.journal.get({
        chainId: 8453,
        asset: BASE_USDC.toLowerCase() as `0x${string}`,
        payer: auth.from.toLowerCase() as `0x${string}`,
        nonce: auth.nonce.toLowerCase() as `0x${string}`,
      });
      assert.equal(record?.state, 'failed');
      assert.equal(record?.errorReason, 'call_abandoned');
    } finally {
      await store.close();
    }
  });
});
