import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/**
 * Starts a bench server script (next to this file) in its own Node process, so it gets its own
 * event loop as it would in production, and waits for the one JSON line with its URL.
 */
export async function startChild(script: string, args: string[]): Promise<{ url: string; close(): Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL(script, import.meta.url)), ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = once(child, 'exit');
  const [line] = (await Promise.race([
    once(createInterface({ input: child.stdout }), 'line'),
    exited.then(([code]) => Promise.reject(new Error(`bench server ${script} exited with ${code} before it was ready`))),
  ])) as [string];
  return { url: (JSON.parse(line) as { url: string }).url, close: async () => void (child.kill(), await exited) };
}
