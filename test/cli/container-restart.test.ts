import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BASE_USDC } from '../../src/chain/networks.js';
import { type Sandbox, startSandbox } from '../../src/chain/sandbox/sandbox.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { callCount, countPayment, startCounterUpstream } from '../helpers/counter-upstream.js';

const bin = path.resolve('dist/src/cli/main.js');
const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-container-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const database = path.join(dir, 'data', 'turnpike.db');
const unshare = ['--pid', '--fork', '--kill-child', '--mount-proc'];
const noNamespaces = spawnSync('unshare', [...unshare, 'true']).status === 0 ? false : 'unshare --pid needs util-linux and root';
let sandbox: Sandbox;
let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;
const running: { kill(): void; exited: Promise<unknown> }[] = [];

/**
 * `turnpike wrap` on the SQLite store as PID 1 of a new PID namespace, as in a container: the
 * process `unshare` forked, its PID as this test sees it, and how it ended.
 */
function containerised(upstreamPath: string) {
  const args = [
    ...['wrap', '--upstream', `${upstream.url}${upstreamPath}`, '--network', 'base', '--rpc-url', sandbox.rpcUrl],
    ...['--pay-to', sandbox.accounts.payees[0]!.address, '--price', '0.01', '--upstream-timeout', '30'],
    ...['--port', '0', '--log-level', 'silent'],
  ];
  const relayer = sandbox.accounts.relayers[0]!.privateKey;
  const env = { PATH: process.env.PATH, TURNPIKE_STORE_URL: `sqlite:${database}`, TURNPIKE_RELAYER_KEY: relayer };
  const child = spawn('unshare', [...unshare, process.execPath, bin, ...args], { env });
  let out = '';
  child.stdout.on('data', (c) => (out += c));
  child.stderr.on('data', (c) => (out += c));
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  running.push({ kill: () => child.kill('SIGKILL'), exited }); // --kill-child: turnpike goes with unshare
  return { exited, output: () => out, unsharePid: child.pid! };
}

/** A containerised turnpike once it serves: its URL, and its PID in this test's namespace (1 in its own). */
async function serving(upstreamPath: string) {
  const run = containerised(upstreamPath);
  const ready = /paying MCP endpoint at (\S+)\/mcp /;
  let exited = false;
  void run.exited.then(() => (exited = true));
  while (!ready.test(run.output())) {
    if (exited) assert.fail(`turnpike exited: ${run.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const pid = Number(readFileSync(`/proc/${run.unsharePid}/task/${run.unsharePid}/children`, 'utf8').trim());
  assert.match(readFileSync(`/proc/${pid}/status`, 'utf8'), /^NSpid:\s+\d+\s+1$/m, 'turnpike is PID 1 of its namespace');
  return { url: ready.exec(run.output())![1]!, pid, exited: run.exited };
}

const call = (url: string, payment?: unknown) => callCount(`${url}/mcp`, payment);
const paymentFor = (url: string, payer: number) => countPayment(`${url}/mcp`, sandbox.accounts.payers[payer]!);

describe('turnpike as PID 1 of a container, on SQLite', { skip: noNamespaces, timeout: 120_000 }, () => {
  before(async () => {
    sandbox = await startSandbox();
    upstream = await startCounterUpstream();
  });
  after(async () => {
    for (const r of running) r.kill();
    await Promise.all(running.map((r) => r.exited));
    await upstream?.close();
    await sandbox?.stop();
  });

  test('killed with SIGKILL in a paid call and restarted as PID 1: it serves, and finishes the dead instance’s journal entry', async () => {
    const doomed = await serving('/hang');
    const payment = await paymentFor(doomed.url, 0);
    void call(doomed.url, payment).catch(() => undefined);
    const store = await openSqliteStore({ path: database });
    try {
      const deadline = Date.now() + 10_000;
      while ((await store.journal.unfinished()).length === 0) {
        if (Date.now() > deadline) assert.fail('the payment was never held');
        await new Promise((r) => setTimeout(r, 50));
      }
      process.kill(doomed.pid, 'SIGKILL');
      await doomed.exited;

      const restarted = await serving('/mcp');
      const paid = await call(restarted.url, await paymentFor(restarted.url, 1));
      assert.equal(
        (paid.result?._meta?.['x402/payment-response'] as { success?: boolean } | undefined)?.success,
        true,
        JSON.stringify(paid),
      );
      assert.equal(upstream.runs(), 1, 'the restarted instance ran the paid call');

      assert.deepEqual(await store.journal.unfinished(), [], 'nothing left unfinished');
      const auth = (payment.payload as { authorization: { from: string; nonce: string } }).authorization;
      const key = { chainId: 8453, asset: BASE_USDC.toLowerCase() as `0x${string}`, payer: auth.from.toLowerCase() as `0x${string}` };
      const record = await store.journal.get({ ...key, nonce: auth.nonce.toLowerCase() as `0x${string}` });
      assert.equal(record?.state, 'failed');
      assert.equal(record?.errorReason, 'call_abandoned');
    } finally {
      await store.close();
    }
  });

  test('a second live container with the same relayer key on the same store is still refused', async () => {
    // The instance restarted by the test above still runs.
    const clash = containerised('/mcp');
    assert.notEqual(await clash.exited, 0);
    const refusal = /relayer 0x[0-9a-fA-F]{40} is sending for another turnpike instance on this store; give each instance its own/;
    assert.match(clash.output(), refusal);
  });
});
