import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** Where the bench's server scripts run from: compiled next to dist/src, so packages resolve from node_modules. */
const OUT = path.join(ROOT, 'dist/bench');

/**
 * The sources a bench server may import (src/, contracts-abi/, scripts/bench/), compiled file by
 * file, once per run: modules stay modules, so what turnpike imports only when it needs it (the
 * PostgreSQL driver, pino-pretty) stays out of a process that does not, as in dist/.
 */
let compiled: Promise<unknown> | undefined;
const compile = () =>
  (compiled ??= build({
    entryPoints: ['src', 'contracts-abi', 'scripts/bench'].flatMap((dir) =>
      readdirSync(path.join(ROOT, dir), { recursive: true, encoding: 'utf8' })
        .filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts'))
        .map((file) => path.join(ROOT, dir, file)),
    ),
    outdir: OUT,
    outbase: ROOT,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'error',
  }));

/**
 * Starts a bench server script (next to this file) in its own Node process, so it gets its own
 * event loop as it would in production, and waits for the one JSON line with its URL (and
 * whatever else it needs to tell, in `ready`). The script runs compiled (see `compile`), as
 * turnpike runs from dist/: through tsx's loader a process holds another 30–60 MB and a loader
 * thread, which the memory rows would otherwise count. `turnpike: true` for a script that stands for
 * turnpike's own process: its heap is set up as turnpike's CLI sets it (lean-heap.ts).
 */
export async function startChild(
  script: string,
  args: string[],
  { turnpike = false } = {},
): Promise<{ url: string; ready: Record<string, string>; pid: number; close(): Promise<void> }> {
  await compile();
  const outfile = path.join(OUT, 'scripts/bench', script.replace(/\.ts$/, '.js'));
  // BENCH_CPU_PROF=<dir> writes a CPU profile of each server process there when it stops.
  const profile = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  const heap = turnpike ? ['--import', pathToFileURL(path.join(OUT, 'scripts/bench/lean-heap.js')).href] : [];
  const child = spawn(process.execPath, [...heap, ...profile, outfile, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
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

/**
 * The CPU time (user + system) a process has used so far, in ms (Linux: /proc), or NaN where that
 * cannot be read. Divided by the calls between two readings, it is a cost per call that a machine
 * shared with other work disturbs far less than calls per second.
 */
export function cpuMs(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    // utime and stime are fields 14 and 15 of stat(5), in clock ticks (100 per second on Linux).
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return Number.NaN;
  }
}
