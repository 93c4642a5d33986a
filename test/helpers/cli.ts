import { spawn } from 'node:child_process';
import path from 'node:path';

/** The built CLI (`npm test` builds before it runs the tests). */
const TURNPIKE_BIN = path.resolve('dist/src/cli/main.js');

/**
 * Runs the built `turnpike` with only PATH and `env` in its environment, collecting its output.
 *
 * @example const { code, stderr } = await turnpike(['wrap', '--price', '-1']).done;
 */
export function turnpike(args: string[], env: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, [TURNPIKE_BIN, ...args], { env: { PATH: process.env.PATH, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c) => (stdout += c));
  child.stderr.on('data', (c) => (stderr += c));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.on('exit', (code) => resolve({ code, stdout, stderr })),
  );
  return { child, done, stdout: () => stdout };
}
