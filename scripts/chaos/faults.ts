import type { Chain } from './chain.js';
import { seededRandom } from './rng.js';
import type { Stack } from './stack.js';

export const faultKinds = ['turnpike_kill', 'rpc_stall', 'upstream_crash'] as const;
export type FaultKind = (typeof faultKinds)[number];
export type Fault = { kind: FaultKind; at: number; ms: number };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Injects faults at random moments until `running()` turns false: turnpike killed with SIGKILL
 * and restarted on the same data and port, anvil stopped (SIGSTOP) for 1–3 s, the upstream
 * killed and restarted. Each kind comes once first, in a random order, so even a short run has
 * all three. A stall runs alongside the next faults (turnpike may be restarted while the chain
 * does not answer). `ms` is how long the part was down.
 */
export async function injectFaults(options: { chain: Chain; stack: Stack; seed: number; running: () => boolean }): Promise<Fault[]> {
  const { chain, stack } = options;
  const random = seededRandom(options.seed * 7919 + 1);
  const faults: Fault[] = [];
  const first = random.shuffle(faultKinds);
  let stall: Promise<void> | undefined;

  const restart = async (part: Stack['turnpike'] | Stack['upstream'], kind: FaultKind) => {
    const at = Date.now();
    await part.kill();
    await sleep(random.int(0, 500));
    await part.start();
    faults.push({ kind, at, ms: Date.now() - at });
  };

  await sleep(random.int(500, 1500));
  while (options.running()) {
    const drawn = first.shift() ?? random.weighted({ turnpike_kill: 4, rpc_stall: 3, upstream_crash: 3 });
    const kind = drawn === 'rpc_stall' && chain.stalled ? 'turnpike_kill' : drawn;
    if (kind === 'rpc_stall') {
      const ms = random.int(1000, 3000);
      faults.push({ kind, at: Date.now(), ms });
      stall = chain.stall(ms);
    } else {
      await restart(kind === 'turnpike_kill' ? stack.turnpike : stack.upstream, kind);
    }
    // Close together until each kind has come once, so that a short run has all three.
    await sleep(first.length > 0 ? random.int(300, 800) : random.int(800, 2500));
  }
  await stall;
  return faults;
}
