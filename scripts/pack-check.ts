/**
 * `npm run pack-check`: turnpike as someone installs it. Packs the package (`prepack` builds
 * `dist/`), installs the tarball into an empty project in a temporary directory (from the npm
 * cache where it can, the registry otherwise), runs `npx turnpike demo` there until it prints its
 * receipt and serves, then stops it with SIGINT as Ctrl-C would. Checks on the way that
 * the tarball holds the built code and no sources or tests, and that it builds nothing when
 * installed. Exit 1 on any failure, keeping the directory for a look; about 2 to 5 minutes
 * (`better-sqlite3` compiles where no prebuilt binary downloads), so it is not part of `npm test`.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const DEMO_TIMEOUT_MS = 120_000;
const run = promisify(execFile);
const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-pack-check-'));
const started = performance.now();
const say = (line: string) => process.stdout.write(`pack-check [${((performance.now() - started) / 1000).toFixed(0)} s] ${line}\n`);

/** The check's failure: what went wrong, for the operator to read. */
class CheckFailed extends Error {}

async function check(): Promise<void> {
  say(`packing into ${dir}`);
  const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', dir], { maxBuffer: 1 << 26 });
  const [packed] = JSON.parse(stdout.slice(stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
  const files = packed!.files.map((f) => f.path);
  for (const needed of ['dist/src/cli/main.js', 'dist/contracts-abi/usdc.js', 'package.json']) {
    if (!files.includes(needed)) throw new CheckFailed(`the tarball lacks ${needed}`);
  }
  const stray = files.filter((f) => f.startsWith('src/') || f.startsWith('test/') || (f.endsWith('.ts') && !f.endsWith('.d.ts')));
  if (stray.length > 0) throw new CheckFailed(`the tarball carries sources: ${stray.slice(0, 5).join(', ')}`);
  const manifest = JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: Record<string, string> };
  const atInstall = ['preinstall', 'install', 'postinstall', 'prepare'].filter((s) => manifest.scripts[s]);
  if (atInstall.length > 0) throw new CheckFailed(`package.json runs ${atInstall.join(', ')} when installed: nothing may be built then`);
  say(`${packed!.filename}: ${files.length} files`);

  const project = path.join(dir, 'project');
  mkdirSync(project);
  // A consumer's own decision under npm 11's allowScripts: the native addons build, the notice does not print.
  const allowScripts = { 'better-sqlite3': true, secp256k1: true, '@coinbase/x402': false };
  writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'pack-check', private: true, allowScripts }, null, 2));
  say('npm install <tarball> in an empty project (prefer-offline)');
  const install = ['install', '--prefer-offline', '--no-audit', '--no-fund', path.join(dir, packed!.filename)];
  await run('npm', install, { cwd: project, maxBuffer: 1 << 26 });
  say('installed; npx turnpike demo');
  await demo(project);
}

/** `npx turnpike demo` in the project: its receipt printed and serving, then SIGINT and exit 0. */
function demo(project: string): Promise<void> {
  const child = spawn('npx', ['--no-install', 'turnpike', 'demo', '--port', '0', '--data-dir', path.join(project, '.turnpike')], {
    cwd: project,
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group, signalled as a terminal's Ctrl-C signals one: npx and the demo together.
    detached: true,
  });
  let output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      process.kill(-child.pid!, 'SIGKILL');
      reject(new CheckFailed(`the demo printed no receipt within ${DEMO_TIMEOUT_MS / 1000} s:\n${output}`));
    }, DEMO_TIMEOUT_MS);
    let stopping = false;
    const read = (chunk: Buffer) => {
      output += chunk.toString();
      if (!stopping && /receipt\s+settled in 0x[0-9a-f]{64}/.test(output) && output.includes('Press Ctrl-C to stop.')) {
        stopping = true;
        say(output.match(/receipt\s+settled in \S+/)![0]);
        process.kill(-child.pid!, 'SIGINT');
      }
    };
    child.stdout.on('data', read);
    child.stderr.on('data', read);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      // npx itself ends by the signal, as it does under a terminal's Ctrl-C; the demo stops with it.
      if (stopping && (code === 0 || signal === 'SIGINT')) return resolve();
      const when = stopping ? 'after SIGINT' : 'before its receipt';
      reject(new CheckFailed(`the demo exited (code ${code}, signal ${signal}) ${when}:\n${output}`));
    });
  });
}

try {
  await check();
  say('PASS: the packed turnpike installs and its demo pays');
  rmSync(dir, { recursive: true, force: true });
} catch (error) {
  say(`FAIL: ${error instanceof CheckFailed ? error.message : String(error)} (kept ${dir})`);
  process.exitCode = 1;
}
