import { type Sandbox, startSandbox } from '../../src/chain/sandbox/sandbox.js';

/**
 * The local Base the run settles on, in the chaos process, and the one fault it takes: the RPC
 * stalls (anvil is stopped with SIGSTOP: connections stay open, nothing answers) and comes back.
 */
export async function startChain(payers: number, blockSeconds = 0) {
  const sandbox: Sandbox = await startSandbox({ payers, relayers: 2, payees: 2 });
  // A block every `blockSeconds` (Base's 2 s for deferred settlement); 0: automine, a block per transaction.
  if (blockSeconds > 0) await sandbox.mineEvery(blockSeconds);
  let stalled = false;
  return {
    sandbox,
    get stalled() {
      return stalled;
    },
    async stall(ms: number) {
      stalled = true;
      process.kill(sandbox.anvil.pid, 'SIGSTOP');
      try {
        await new Promise((r) => setTimeout(r, ms));
      } finally {
        process.kill(sandbox.anvil.pid, 'SIGCONT');
        stalled = false;
      }
    },
    stop: () => sandbox.stop(),
  };
}

export type Chain = Awaited<ReturnType<typeof startChain>>;
