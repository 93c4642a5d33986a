import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, readFileSync } from 'node:fs';

/** `unshare` flags that run a program as PID 1 of a new PID namespace, as a container runs its entrypoint. */
const CONTAINER = ['--pid', '--fork', '--kill-child', '--mount-proc'];
/** Whether this machine lets the run make PID namespaces (util-linux's `unshare`, as root). */
export const containers = spawnSync('unshare', [...CONTAINER, 'true']).status === 0;

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
 * picks a free one): `start` resolves with its URL once it prints that it serves. Started with
 * `{ pid1: true }` it runs as PID 1 of a PID namespace of its own (under `unshare`, which exits
 * when it does); a start without it runs it the way the last one did.
 */
export function restartable(options: RestartableOptions) {
  const log = createWriteStream(options.logFile, { flags: 'a' });
  let child: ChildProcess | undefined;
  let pid1 = false;
  let port = 0;
  let url = '';

  /** The server's own process: `unshare`'s child when it runs as PID 1 (read from /proc while `unshare` runs). */
  const server = (proc: ChildProcess) => {
    if (!pid1) return proc.pid!;
    const children = readFileSync(`/proc/${proc.pid}/task/${proc.pid}/children`, 'utf8').trim();
    return children ? Number(children.split(' ')[0]) : proc.pid!;
  };
  /**
   * Sends `signal` to the server and waits until it is gone. PID 1 drops a signal it has no handler
   * for, and turnpike installs its handlers just after it says it serves: the signal is sent again
   * every second until the process is gone.
   */
  async function signal(signal: NodeJS.Signals) {
    const proc = child;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = once(proc, 'exit');
    const send = () => {
      try {
        process.kill(server(proc), signal);
      } catch {
        // It ended meanwhile: `gone` settles.
      }
    };
    send();
    const again = setInterval(send, 1000);
    await gone.finally(() => clearInterval(again));
  }

  async function startOnce(): Promise<string> {
    const node = [process.execPath, ...options.args(port)];
    const [command, ...args] = pid1 ? ['unshare', ...CONTAINER, ...node] : node;
    const proc = spawn(command!, args, { env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    live.add(proc);
    const exited = once(proc, 'exit').then(() => live.delete(proc));
    let out = '';
    proc.stderr!.pipe(log, { end: false });
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${options.name} did not say it serves within ${options.readyTimeoutMs ?? 15_000} ms`)),
        options.readyTimeoutMs ?? 15_000,
      );
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
  const kill = () => signal('SIGKILL');

  return {
    get url() {
      return url;
    },
    /**
     * Starts it, trying again if an incarnation dies before it serves (a restart during an RPC
     * stall may give up on reaching the chain).
     */
    async start(how: { pid1?: boolean } = {}, attempts = 5): Promise<string> {
      pid1 = how.pid1 ?? pid1;
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
    stop: () => signal('SIGINT'),
  };
}

export type Restartable = ReturnType<typeof restartable>;
