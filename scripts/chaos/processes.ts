import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';

/** Children still running, killed when the chaos run exits however it exits (short of SIGKILL). */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export type RestartableOptions = {
  name: string;
  /** Node arguments (script and its flags) for a given port; the first start asks for port 0. */
  args: (port: number) => string[];
  env?: NodeJS.ProcessEnv;
  /** Matches the line the process prints once it serves; group 1 is its URL. */
  ready: RegExp;
  /** stdout and stderr of every incarnation are appended here, as evidence. */
  logFile: string;
  readyTimeoutMs?: number;
};

/**
 * A server process that fault injection kills and restarts on the same port (the first start
 * picks a free one): `start` resolves with its URL once it prints that it serves.
 */
export function restartable(options: RestartableOptions) {
  const log = createWriteStream(options.logFile, { flags: 'a' });
  let child: ChildProcess | undefined;
  let port = 0;
  let url = '';

  async function startOnce(): Promise<string> {
    const proc = spawn(process.execPath, options.args(port), { env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    live.add(proc);
    const exited = once(proc, 'exit').then(() => live.delete(proc));
    let out = '';
    proc.stderr!.pipe(log, { end: false });
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${options.name} did not say it serves within ${options.readyTimeoutMs ?? 15_000} ms`)), options.readyTimeoutMs ?? 15_000);
      proc.stdout!.on('data', (chunk: Buffer) => {
        log.write(chunk);
        out += chunk.toString();
        const match = options.ready.exec(out);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]!);
        }
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`${options.name} exited before it served (exit ${proc.exitCode ?? proc.signalCode})`));
      });
    });
  }

  /** Kills with SIGKILL and waits until the process is gone. */
  async function kill() {
    const proc = child;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = once(proc, 'exit');
    proc.kill('SIGKILL');
    await gone;
  }

  return {
    get url() {
      return url;
    },
    /**
     * Starts it, trying again if an incarnation dies before it serves (a restart during an RPC
     * stall may give up on reaching the chain).
     */
    async start(attempts = 5): Promise<string> {
      for (let attempt = 1; ; attempt++) {
        try {
          url = await startOnce();
          port ||= Number(new URL(url).port);
          return url;
        } catch (error) {
          await kill();
          if (attempt >= attempts) throw error;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    },
    kill,
    /** Asks it to stop (SIGINT, as Ctrl-C would), and waits. */
    async stop() {
      const proc = child;
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
      const gone = once(proc, 'exit');
      proc.kill('SIGINT');
      await gone;
    },
  };
}

export type Restartable = ReturnType<typeof restartable>;
