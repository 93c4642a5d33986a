/**
 * Paid calls on a chain with Base's 2 s blocks (the sandbox with `evm_setIntervalMining 2`, the
 * gateway told it is Base): the same tool call free, paid with `settlement: strict` (the result
 * after the receipt) and paid with `settlement: deferred` (the result once the transaction is
 * signed and journalled), one of each per round, each round at a random point of the block.
 */
import type { PaymentRequired } from '@x402/core/types';
import { x402Client } from '@x402/core/client';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import type { Sandbox } from '../../src/chain/sandbox/sandbox.js';
import { startChild } from './child.js';
import { callBody, closeLoad, post } from './mcp-load.js';
import { type Row, summarize } from './stats.js';

const ROUNDS = 40;
const WARM_UP = 5;

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function benchPaidOnBlocks(sandbox: Sandbox, progress: (s: string) => void): Promise<Row[]> {
  const upstream = await startChild('./upstream-server.ts', []);
  const gateway = await startChild('./paid-gateway.ts', [upstream.url, sandbox.rpcUrl, sandbox.accounts.relayers[2]!.privateKey]);
  const samples = { free: [] as number[], strict: [] as number[], deferred: [] as number[] };
  try {
    await sandbox.mineEvery(2);
    const args = { city: 'Oslo' };
    const challenge = JSON.parse(await post(`${gateway.url}/strict`, callBody('forecast', args))) as {
      result: { structuredContent: PaymentRequired };
    };
    const required = challenge.result.structuredContent;
    const payers = sandbox.accounts.payers;
    const pay = (i: number) =>
      new x402Client().register('eip155:8453', new ExactEvmScheme(payers[i % payers.length]!)).createPaymentPayload(required);
    const timed = async (url: string, body: string) => {
      const t = performance.now();
      const answer = await post(url, body);
      if (answer.includes('"isError":true') || answer.includes('"error"')) throw new Error(`bench call failed: ${answer.slice(0, 300)}`);
      return performance.now() - t;
    };
    for (let i = -WARM_UP; i < ROUNDS; i++) {
      progress(`paid calls on 2 s blocks: round ${i + 1}/${ROUNDS}`);
      const [strictPayment, deferredPayment] = await Promise.all([pay(2 * (i + WARM_UP)), pay(2 * (i + WARM_UP) + 1)]);
      await sleep(Math.random() * 2000);
      const free = await timed(`${gateway.url}/strict`, callBody('hello', { name: 'bench' }));
      const deferred = await timed(`${gateway.url}/deferred`, callBody('forecast', args, deferredPayment));
      const strict = await timed(`${gateway.url}/strict`, callBody('forecast', args, strictPayment));
      if (i < 0) continue;
      samples.free.push(free);
      samples.deferred.push(deferred);
      samples.strict.push(strict);
    }
  } finally {
    await sandbox.mineEvery(0);
    await gateway.close();
    await upstream.close();
    closeLoad();
  }
  const free = summarize(samples.free);
  const path = 'tools/call on 2 s blocks (--network base, one at a time)';
  const p95 = (s: ReturnType<typeof summarize>) => `p95 ${s.p95.toFixed(1)} ms`;
  const row = (subject: string, s: ReturnType<typeof summarize>, note: string): Row => ({
    path,
    subject,
    p50Ms: s.p50,
    p99Ms: s.p99,
    note: `${p95(s)}; ${note}`,
  });
  const strict = summarize(samples.strict);
  const deferred = summarize(samples.deferred);
  const versusFree = (s: ReturnType<typeof summarize>) =>
    `+${(s.p50 - free.p50).toFixed(1)} ms p50 over free (${(s.p50 / free.p50).toFixed(1)}×), +${(s.p95 - free.p95).toFixed(1)} ms p95`;
  return [
    row('free call', free, `${ROUNDS} rounds after ${WARM_UP} warm-up, each at a random point of the block`),
    row('paid, settlement: deferred', deferred, versusFree(deferred)),
    row('paid, settlement: strict', strict, `${versusFree(strict)}; ${(strict.p50 / deferred.p50).toFixed(0)}× deferred`),
  ];
}
