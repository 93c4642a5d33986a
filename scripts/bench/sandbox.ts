import { startAnvil } from '../../src/chain/sandbox/anvil.js';
import { startSandbox } from '../../src/chain/sandbox/sandbox.js';
import { type Row, summarize } from './stats.js';

/**
 * Sandbox start-up: a bare anvil answering eth_chainId vs the full sandbox (USDC planted,
 * initialized, payers funded, `balanceOf` answering), alternated in one run.
 */
export async function benchSandbox(rounds: number, progress: (s: string) => void): Promise<Row[]> {
  const bare: number[] = [];
  const full: number[] = [];
  for (let i = 0; i < rounds; i++) {
    let t = performance.now();
    const anvil = await startAnvil({ chainId: 8453 });
    bare.push(performance.now() - t);
    await anvil.stop();
    t = performance.now();
    const sandbox = await startSandbox();
    full.push(performance.now() - t);
    await sandbox.stop();
    progress(`sandbox start-up ${i + 1}/${rounds}`);
  }
  const b = summarize(bare);
  const f = summarize(full);
  return [
    { path: 'sandbox start-up', subject: 'bare anvil (answers RPC)', p50Ms: b.p50, p99Ms: b.p99 },
    {
      path: 'sandbox start-up',
      subject: 'turnpike sandbox (USDC answers balanceOf)',
      p50Ms: f.p50,
      p99Ms: f.p99,
      note: `${(f.p50 / b.p50).toFixed(2)}× bare anvil`,
    },
  ];
}
