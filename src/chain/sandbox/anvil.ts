import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer, type Socket } from 'node:net';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { SandboxError } from './errors.js';

/** A running anvil node owned by this process. */
export type Anvil = {
  rpcUrl: string;
  port: number;
  /** pid of anvil itself (not of its watchdog shell), for fault injection such as SIGSTOP. */
  pid: number;
  stop(): Promise<void>;
};

export type StartAnvilOptions = {
  chainId: number;
  /** Fixed port; by default a free one is picked. */
  port?: number;
  /** Give up if the node does not answer within this time. */
  readyTimeoutMs?: number;
};

const platformPackage = () => {
  const arch = process.arch === 'x64' ? 'amd64' : process.arch;
  return `@foundry-rs/anvil-${process.platform}-${arch}`;
};

/** Path of the anvil binary shipped by the npm platform package. */
export function anvilBinary(): string {
  const pkg = platformPackage();
  try {
    const dir = path.dirname(createRequire(import.meta.url).resolve(`${pkg}/package.json`));
    const bin = path.join(dir, 'bin', 'anvil');
    if (existsSync(bin)) return bin;
  } catch {
    // fall through to the error that says what to do
  }
  throw new SandboxError(
    `the local sandbox needs anvil from the npm package ${pkg}, which is not installed for this platform. ` +
      `Install it (npm install ${pkg}) or point turnpike at a node with --rpc-url.`,
  );
}

const live = new Set<Anvil>();
let exitHookInstalled = false;

// The watchdog shell kills anvil when our end of its stdin closes, which the kernel does for us
// even when this process dies by SIGKILL; 'exit' covers the ordinary ends faster.
// (Background jobs of a non-interactive shell get /dev/null as stdin, hence the copy on fd 3.)
const WATCHDOG = [
  'exec 3<&0',
  '"$0" "$@" </dev/null 3<&- & pid=$!',
  '(read -r _ <&3; kill "$pid") >/dev/null 2>&1 &',
  'exec 3<&-',
  'echo "$pid"',
  'wait "$pid"',
].join('\n');

/**
 * Spawns anvil on 127.0.0.1 and resolves once it answers JSON-RPC.
 *
 * @example
 * const node = await startAnvil({ chainId: 8453 });
 * // ... node.rpcUrl ...
 * await node.stop();
 */
export async function startAnvil(options: StartAnvilOptions): Promise<Anvil> {
  const binary = anvilBinary();
  installExitHook();
  for (let attempt = 1; ; attempt++) {
    const port = options.port ?? (await freePort());
    try {
      return await launch(binary, port, options);
    } catch (error) {
      // Another process can take a free port between our probe and anvil's bind.
      const portRace = options.port === undefined && attempt < 3 && /address.*in use/i.test(String(error));
      if (!portRace) throw error;
    }
  }
}

async function launch(binary: string, port: number, options: StartAnvilOptions): Promise<Anvil> {
  const args = ['--host', '127.0.0.1', '--port', String(port), '--chain-id', String(options.chainId)];
  args.push('--accounts', '0', '--silent');
  const child: ChildProcessByStdio<Writable, Readable, Readable> = spawn('/bin/sh', ['-c', WATCHDOG, binary, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-2000)));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const pid = await new Promise<number>((resolve, reject) => {
    child.stdout.once('data', (chunk: Buffer) => resolve(Number.parseInt(chunk.toString(), 10)));
    child.once('error', reject);
  });
  child.stdout.resume();
  // anvil must not keep its owner alive: the owner's exit is what stops it.
  child.unref();
  for (const stream of [child.stdin, child.stdout, child.stderr]) (stream as unknown as Socket).unref();

  const rpcUrl = `http://127.0.0.1:${port}`;
  const stop = async () => {
    live.delete(anvil);
    if (child.exitCode !== null) return;
    child.stdin.end();
    const timer = setTimeout(() => killQuietly(pid, 'SIGKILL'), 2000);
    await exited;
    clearTimeout(timer);
  };
  const anvil: Anvil = { rpcUrl, port, pid, stop };
  live.add(anvil);

  const deadline = Date.now() + (options.readyTimeoutMs ?? 10_000);
  for (;;) {
    if (child.exitCode !== null) {
      live.delete(anvil);
      throw new SandboxError(`anvil exited before it was ready: ${stderr.trim() || `exit code ${child.exitCode}`}`);
    }
    if (await answers(rpcUrl)) return anvil;
    if (Date.now() > deadline) {
      await stop();
      throw new SandboxError(`anvil did not answer on ${rpcUrl} within ${options.readyTimeoutMs ?? 10_000} ms`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function answers(rpcUrl: string): Promise<boolean> {
  try {
    const res = await fetch(rpcUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}',
    });
    return res.ok;
  } catch {
    return false;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (address && typeof address === 'object' ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

function killQuietly(pid: number, signal: NodeJS.Signals) {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const anvil of live) killQuietly(anvil.pid, 'SIGKILL');
  });
}
