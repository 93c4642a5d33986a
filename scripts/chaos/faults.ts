import type { Chain } from './chain.js';
import { containers } from './processes.js';
import { seededRandom } from './rng.js';
import type { Stack } from './stack.js';

export const faultKinds = ['turnpike_kill', 'container_restart', 'rpc_stall', 'upstream_crash', 'upstream_loop'] as const;
/** The kinds that kill turnpike with SIGKILL. */
export const turnpikeKills: readonly FaultKind[] = ['turnpike_kill', 'container_restart'];
export type FaultKind = (typeof faultKinds)[number];
export type Fault = { kind: FaultKind; at: number; ms: number };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Injects faults at random moments until `running()` turns false: turnpike killed with SIGKILL
 * and restarted on the same data and port as a plain process, or as PID 1 of a new PID namespace
 * (a container's restart: after a PID 1, the dead one's PID is the new one's; where PID
 * namespaces cannot be made, not at all), anvil stopped (SIGSTOP) for 1–3 s, the upstream killed
 * and restarted, the upstream made a loop back to turnpike for 1–3 s (it forwards every MCP request
 * to turnpike's own MCP URL, Turnpike-Hop and all, and answers what turnpike answers; nothing else
 * is done to the stack meanwhile). Each kind comes once first, in a random order, so even a short
 * run has them all. A stall runs alongside the next faults (turnpike may be restarted while the
 * chain does not answer). `ms` is how long the part was down.
 */
export async function injectFaults(options: { chain: Chain; stack: Stack; seed: number; running: () => boolean }): Promise<Fault[]> {
  const { chain, stack } = options;
  const random = seededRandom(options.seed * 7919 + 1);
  const faults: Fault[] = [];
  const first = random.shuffle(faultKinds.filter((k) => containers || k !== 'container_restart'));
  // Turnpike starts as PID 1 (startStack): the first container restart comes before any plain
  // kill, so that it finds the dead instance's PID to be its own.
  if (first.indexOf('container_restart') > first.indexOf('turnpike_kill')) first.reverse();
  let stall: Promise<void> | undefined;

  const restart = async (part: Stack['turnpike'] | Stack['upstream'], kind: FaultKind, how: { pid1?: boolean } = {}) => {
    const at = Date.now();
    await part.kill();
    await sleep(random.int(0, 500));
    await part.start(how);
    faults.push({ kind, at, ms: Date.now() - at });
  };

  await sleep(random.int(500, 1500));
  while (options.running()) {
    const weights = { turnpike_kill: 4, container_restart: containers ? 2 : 0, rpc_stall: 3, upstream_crash: 3, upstream_loop: 2 };
    const drawn = first.shift() ?? random.weighted(weights);
    const kind = drawn === 'rpc_stall' && chain.stalled ? 'turnpike_kill' : drawn;
    if (kind === 'rpc_stall') {
      const ms = random.int(1000, 3000);
      faults.push({ kind, at: Date.now(), ms });
      stall = chain.stall(ms);
    } else if (kind === 'upstream_loop') {
      const ms = random.int(1000, 3000);
      const at = Date.now();
      await stack.loopUpstream(ms);
      await sleep(ms - (Date.now() - at));
      faults.push({ kind, at, ms });
    } else if (kind === 'upstream_crash') {
      await restart(stack.upstream, kind);
    } else {
      await restart(stack.turnpike, kind, { pid1: kind === 'container_restart' });
    }
    // Close together until each kind has come once, so that a short run has them all.
    await sleep(first.length > 0 ? random.int(300, 800) : random.int(800, 2500));
  }
  await stall;
  return faults;
}
