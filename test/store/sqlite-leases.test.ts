import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { openSqliteStore } from '../../src/store/sqlite.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-leases-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = () => path.join(dir, `db-${++n}`, 'turnpike.db');
const fixture = fileURLToPath(new URL('./fixtures/hold-lease.ts', import.meta.url));

/** Another process holding the lease `name` on the store at `file`: its instance id, and a SIGKILL for it. */
async function holder(file: string, name: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture, file, name], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  let out = '';
  child.stdout.on('data', (chunk) => (out += chunk));
  child.stderr.on('data', (chunk) => (out += chunk));
  await Promise.race([new Promise((resolve) => child.stdout.on('data', resolve)), exited]);
  assert.match(out, /^[0-9a-f-]{36}\n$/, `the holder did not start: ${out}`);
  return {
    instanceId: out.trim(),
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}
const lockFiles = (file: string) => readdirSync(`${file}.leases`).sort();

describe('SQLite leases', { timeout: 60_000 }, () => {
  test('a lease whose holder was killed with SIGKILL is free at once, even when a live process has its PID (PID 1 restarted)', async () => {
    const file = fresh();
    const dead = await holder(file, 'relayer:0xabc');
    const store = await openSqliteStore({ path: file });
    try {
      assert.equal(await store.lease('relayer:0xabc'), undefined, 'refused while its holder lives');
      await dead.kill();
      // The restarted process got the dead one's PID, as PID 1 of a container does every time.
      const db = new Database(file);
      assert.equal(db.prepare('UPDATE leases SET pid = ? WHERE instance = ?').run(process.pid, dead.instanceId).changes, 2);
      db.close();
      assert.ok(await store.lease('relayer:0xabc'), 'its relayer key may be sent from again');
      assert.ok(await store.lease(`instance:${dead.instanceId}`), 'its journal entries may be recovered');
    } finally {
      await store.close();
    }
  });

  test('an instance’s lock file is beside the database while it is open, gone when it closes, swept after a SIGKILL', async () => {
    const file = fresh();
    const store = await openSqliteStore({ path: file });
    assert.deepEqual(lockFiles(file), [`${store.instanceId}.lock`]);
    await store.close();
    assert.deepEqual(lockFiles(file), []);

    const dead = await holder(file, 'relayer:0xabc');
    await dead.kill();
    assert.deepEqual(lockFiles(file), [`${dead.instanceId}.lock`]);
    const next = await openSqliteStore({ path: file });
    assert.deepEqual(lockFiles(file), [`${next.instanceId}.lock`]);
    await next.close();
  });
});
