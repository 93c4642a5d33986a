import assert from 'node:assert/strict';
import fs, { mkdtempSync, rmSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, test } from 'node:test';
import Database from 'better-sqlite3';
import { closeGroupCommit, groupCommit } from '../../src/store/engine/group-commit.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-group-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

/** A WAL database with one table, and what a second connection (another process) sees of it. */
function open() {
  const file = path.join(dir, `g-${++n}.db`);
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec('CREATE TABLE t (v INTEGER NOT NULL UNIQUE)');
  const seen = () => {
    const other = new Database(file, { readonly: true });
    try {
      return other.prepare('SELECT v FROM t ORDER BY v').pluck().all() as number[];
    } finally {
      other.close();
    }
  };
  return { db, seen, insert: db.prepare('INSERT INTO t (v) VALUES (?)') };
}

/** Holds every WAL sync until `release`, or fails them; counts the syncs that ran. */
function holdSyncs(fail?: Error) {
  const original = fs.fdatasync;
  const waiting: (() => void)[] = [];
  let syncs = 0;
  fs.fdatasync = ((fd: number, callback: (error: NodeJS.ErrnoException | null) => void) => {
    syncs++;
    waiting.push(() => (fail ? callback(fail) : original(fd, callback)));
  }) as typeof fs.fdatasync;
  syncBuiltinESMExports();
  return {
    get syncs() {
      return syncs;
    },
    release: () => waiting.splice(0).forEach((go) => go()),
    restore() {
      fs.fdatasync = original;
      syncBuiltinESMExports();
    },
  };
}

let restore: (() => void) | undefined;
afterEach(() => restore?.());

const settled = async (promise: Promise<unknown>) => {
  let done = false;
  void promise.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((resolve) => setTimeout(resolve, 20));
  return done;
};

test('a write settles only after the WAL is synced; writes of one turn share one commit and one sync', async () => {
  const { db, seen, insert } = open();
  const { write } = groupCommit(db);
  const syncs = holdSyncs();
  restore = syncs.restore;
  const writes = [1, 2, 3].map((v) => write(() => insert.run(v).changes));
  assert.equal(await settled(Promise.all(writes)), false, 'nothing settles while the sync is held');
  assert.deepEqual(seen(), [1, 2, 3], 'committed meanwhile: visible to another connection');
  assert.equal(syncs.syncs, 1);
  syncs.release();
  assert.deepEqual(await Promise.all(writes), [1, 1, 1]);
  db.close();
  closeGroupCommit(db);
});

test('a commit made while a sync runs waits for the next sync, one for all the commits made meanwhile, not one each', async () => {
  const { db, insert } = open();
  const { write } = groupCommit(db);
  const syncs = holdSyncs();
  restore = syncs.restore;
  const first = write(() => insert.run(1).changes);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(syncs.syncs, 1, 'the first commit is being synced');
  const later = [2, 3].map((v) => write(() => insert.run(v).changes));
  await new Promise((resolve) => setImmediate(resolve));
  const more = write(() => insert.run(4).changes);
  assert.equal(await settled(Promise.all([...later, more])), false, 'committed after that sync began: not durable by it');
  assert.equal(syncs.syncs, 1, 'no second sync while the first runs');
  syncs.release();
  assert.equal(await first, 1);
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(syncs.syncs, 2, 'one sync for both commits made meanwhile');
  assert.equal(await settled(Promise.all([...later, more])), false, 'they wait for that sync');
  syncs.release();
  assert.deepEqual(await Promise.all([...later, more]), [1, 1, 1]);
  db.close();
  closeGroupCommit(db);
});

test('a commit waiting for the next sync when its connection closes is told durable, not failed by a WAL that closing removed', async () => {
  const { db, seen, insert } = open();
  const { write } = groupCommit(db);
  const syncs = holdSyncs();
  restore = syncs.restore;
  const first = write(() => insert.run(1).changes);
  await new Promise((resolve) => setImmediate(resolve));
  const later = write(() => insert.run(2).changes);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(syncs.syncs, 1, 'the second commit waits for the next sync');
  db.close(); // the store shuts down: SQLite checkpoints the WAL into the database and removes it
  closeGroupCommit(db);
  syncs.release();
  assert.equal(await first, 1);
  await new Promise((resolve) => setTimeout(resolve, 20));
  syncs.release();
  assert.equal(await later, 1, 'committed, and in the database file: durable');
  assert.deepEqual(seen(), [1, 2]);
});

test('decide settles at the commit, with `durable` settling after the sync', async () => {
  const { db, insert } = open();
  const { decide } = groupCommit(db);
  const syncs = holdSyncs();
  restore = syncs.restore;
  const { value, durable } = await decide(() => insert.run(7).changes);
  assert.equal(value, 1);
  assert.equal(await settled(durable), false);
  syncs.release();
  await durable;
  db.close();
  closeGroupCommit(db);
});

test('a write that throws is rolled back alone; the others of its commit stand', async () => {
  const { db, seen, insert } = open();
  const { write } = groupCommit(db);
  const results = await Promise.allSettled([write(() => insert.run(1)), write(() => insert.run(1)), write(() => insert.run(2))]);
  assert.deepEqual(
    results.map((r) => r.status),
    ['fulfilled', 'rejected', 'fulfilled'],
  );
  assert.deepEqual(seen(), [1, 2]);
  db.close();
  closeGroupCommit(db);
});

test('a group whose writes all succeed runs each once, with no savepoint; one that throws makes the group run again, each write in its own', async () => {
  const { db, seen, insert } = open();
  const { write } = groupCommit(db);
  const runs = [0, 0, 0];
  const counted = (i: number, v: number) => () => {
    runs[i]!++;
    return insert.run(v).changes;
  };
  await Promise.all([write(counted(0, 1)), write(counted(1, 2)), write(counted(2, 3))]);
  assert.deepEqual(runs, [1, 1, 1]);
  runs.fill(0);
  const results = await Promise.allSettled([write(counted(0, 4)), write(counted(1, 1)), write(counted(2, 5))]);
  assert.deepEqual(
    results.map((r) => r.status),
    ['fulfilled', 'rejected', 'fulfilled'],
  );
  assert.deepEqual(runs, [2, 2, 1], 'the first pass stopped at the write that threw');
  assert.deepEqual(seen(), [1, 2, 3, 4, 5]);
  db.close();
  closeGroupCommit(db);
});

test('a lone write that throws is rolled back whole and rejects; the next group commits', async () => {
  const { db, seen, insert } = open();
  const { write } = groupCommit(db);
  const failing = write(() => {
    insert.run(5);
    throw new Error('refused after writing');
  });
  await assert.rejects(failing, /refused after writing/);
  assert.equal(db.inTransaction, false);
  assert.equal(await write(() => insert.run(6).changes), 1);
  assert.deepEqual(seen(), [6]);
  db.close();
  closeGroupCommit(db);
});

test('a failed sync fails every write of its commit, and the durable promise of a decided one', async () => {
  const { db, insert } = open();
  const { write, decide } = groupCommit(db);
  const syncs = holdSyncs(Object.assign(new Error('EIO: i/o error'), { code: 'EIO' }));
  restore = syncs.restore;
  const written = write(() => insert.run(1));
  const decided = decide(() => insert.run(2));
  await new Promise((resolve) => setImmediate(resolve));
  syncs.release();
  await assert.rejects(written, /cannot sync the SQLite WAL to disk: EIO/);
  await assert.rejects((await decided).durable, /cannot sync the SQLite WAL to disk: EIO/);
  db.close();
  closeGroupCommit(db);
});

test('after a failed sync every later write fails too, though the disk syncs again: a lost write-back is reported only once', async () => {
  const { db, insert, seen } = open();
  const { write } = groupCommit(db);
  const syncs = holdSyncs(Object.assign(new Error('EIO: i/o error'), { code: 'EIO' }));
  restore = syncs.restore;
  const lost = write(() => insert.run(1));
  await new Promise((resolve) => setImmediate(resolve));
  syncs.release();
  await assert.rejects(lost, /EIO/);
  syncs.restore();
  await assert.rejects(
    write(() => insert.run(2)),
    /an earlier sync failed \(EIO: i\/o error\).*restart turnpike/,
  );
  assert.deepEqual(seen(), [1, 2], 'committed to the WAL, never told durable');
  db.close();
  closeGroupCommit(db);
});

test('a write queued as the connection closes is refused, not thrown out of the event loop', async () => {
  const { db, insert } = open();
  const { write } = groupCommit(db);
  const queued = write(() => insert.run(1));
  db.close();
  closeGroupCommit(db);
  await assert.rejects(queued, /database connection is not open/);
});
