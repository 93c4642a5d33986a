import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

/** Where the bench's server scripts are compiled to (next to dist/src, so packages resolve from node_modules). */
const OUT = fileURLToPath(new URL('../../dist/bench/', import.meta.url));

/**
 * Starts a bench server script (next to this file) in its own Node process, so it gets its own
 * event loop as it would in production, and waits for the one JSON line with its URL (and
 * whatever else it needs to tell, in `ready`). The script runs compiled to one JavaScript file
 * (packages left as imports), as turnpike runs from dist/: through tsx's loader a process holds
 * another 30–60 MB and a loader thread, which the memory rows would otherwise count.
 */
export async function startChild(
  script: string,
  args: string[],
): Promise<{ url: string; ready: Record<string, string>; pid: number; close(): Promise<void> }> {
  const source = fileURLToPath(new URL(script, import.meta.url));
  const outfile = `${OUT}${script.replace(/^\.\//, '').replace(/\.ts$/, '.mjs')}`;
  await build({
    entryPoints: [source],
    outfile,
    bundle: true,
    packages: 'external',
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'error',
  });
  // BENCH_CPU_PROF=<dir> writes a CPU profile of each server process there when it stops.
  const profile = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  const child = spawn(process.execPath, [...profile, outfile, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  const [line] = (await Promise.race([
    once(createInterface({ input: child.stdout }), 'line'),
    exited.then(([code]) => Promise.reject(new Error(`bench server ${script} exited with ${code} before it was ready`))),
  ])) as [string];
  const ready = JSON.parse(line) as { url: string } & Record<string, string>;
  return { url: ready.url, ready, pid: child.pid!, close: async () => void (child.kill(), await exited) };
}

/** A process's resident set size in MB (Linux: /proc), or NaN where that cannot be read. */
export function rssMb(pid: number): number {
  try {
    const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb === undefined ? Number.NaN : Number(kb) / 1024;
  } catch {
    return Number.NaN;
  }
}
