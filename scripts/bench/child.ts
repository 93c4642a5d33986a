import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/**
 * Starts a bench server script (next to this file) in its own Node process, so it gets its own
 * event loop as it would in production, and waits for the one JSON line with its URL (and
 * whatever else it needs to tell, in `ready`).
 */
export async function startChild(
  script: string,
  args: string[],
): Promise<{ url: string; ready: Record<string, string>; close(): Promise<void> }> {
  // BENCH_CPU_PROF=<dir> writes a CPU profile of each server process there when it stops.
  const profile = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  const child = spawn(process.execPath, [...profile, '--import', 'tsx', fileURLToPath(new URL(script, import.meta.url)), ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = once(child, 'exit');
  const [line] = (await Promise.race([
    once(createInterface({ input: child.stdout }), 'line'),
    exited.then(([code]) => Promise.reject(new Error(`bench server ${script} exited with ${code} before it was ready`))),
  ])) as [string];
  const ready = JSON.parse(line) as { url: string } & Record<string, string>;
  return { url: ready.url, ready, close: async () => void (child.kill(), await exited) };
}
