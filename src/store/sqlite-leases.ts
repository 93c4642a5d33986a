import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { Lease } from './store.js';

const LOCK = '.lock';

/** Opens a lock file (without creating it): undefined if it is not there. */
function openLock(file: string): Database.Database | undefined {
  try {
    return new Database(file, { fileMustExist: true, timeout: 0 });
  } catch (error) {
    if ((error as { code?: string }).code === 'SQLITE_CANTOPEN' || !existsSync(file)) return undefined;
    throw error;
  }
}

/** Runs `fn` while reading `lock` (a shared lock), or answers 'held' if its holder's exclusive lock is on it. */
function whileShared<T>(lock: Database.Database, fn: () => T): T | 'held' {
  try {
    lock.exec('BEGIN');
    lock.prepare('SELECT count(*) FROM sqlite_master').get();
    return fn();
  } catch (error) {
    if ((error as { code?: string }).code === 'SQLITE_BUSY') return 'held';
    throw error;
  } finally {
    lock.close();
  }
}

/**
 * This instance's lock file, created and locked exclusively for as long as the store is open. A
 * sweeper may unlink the new file before it is locked (it was not locked yet, so it looked dead):
 * the file is checked to be still there once locked, and made again if not.
 */
function holdLock(file: string, waitMs: number): Database.Database {
  for (;;) {
    const lock = new Database(file, { timeout: waitMs });
    lock.pragma('journal_mode = MEMORY'); // no `-journal` file beside it (BEGIN EXCLUSIVE writes page 1 of an empty file)
    lock.exec('BEGIN EXCLUSIVE');
    if (existsSync(file)) return lock;
    lock.close();
  }
}

/**
 * The leases of a SQLite store on `file`. A lease is a row of `leases` naming the instance that
 * holds it; that instance is alive while it holds an exclusive lock on its own lock file,
 * `<file>.leases/<instance>.lock` (a small SQLite database kept in `BEGIN EXCLUSIVE`). The kernel
 * drops the lock when the process ends, however it ends: a SIGKILL, or a restart that gets the same
 * PID (PID 1 in every container) finds the dead instance's leases free. The row's `pid` only says
 * which process held it, for whoever reads the table; it is never judged.
 *
 * Invariants: a lease row names an instance only once its lock is held; a lock file is unlinked
 * only by its holder (at close) or by a sweeper reading it (so its holder is not holding it).
 * Instances of one process exclude each other too: SQLite keeps its locks per connection.
 * `:memory:` is this connection's alone, so no other instance ever holds a lease there.
 *
 * @example
 * const leases = sqliteLeases(db, '.turnpike/turnpike.db', instanceId, 5000);
 * const relayer = leases.take('relayer:0xabc'); // undefined while a live instance holds it
 */
export function sqliteLeases(db: Database.Database, file: string, instanceId: string, waitMs: number) {
  const dir = file === ':memory:' ? undefined : `${path.resolve(file)}.leases`;
  const lockOf = (instance: string) => path.join(dir!, `${instance}${LOCK}`);
  let own: Database.Database | undefined;
  if (dir) {
    mkdirSync(dir, { recursive: true });
    own = holdLock(lockOf(instanceId), waitMs);
    // Lock files of instances that died without closing (SIGKILL, power cut) go.
    for (const name of readdirSync(dir)) {
      const lock = name.endsWith(LOCK) && name !== `${instanceId}${LOCK}` ? openLock(path.join(dir, name)) : undefined;
      if (lock) whileShared(lock, () => rmSync(path.join(dir, name), { force: true }));
    }
  }
  const alive = (instance: string) => {
    const lock = dir ? openLock(lockOf(instance)) : undefined;
    return lock !== undefined && whileShared(lock, () => false) === 'held';
  };

  const readLease = db.prepare<[string], { instance: string }>('SELECT instance FROM leases WHERE name = ?');
  const writeLease = db.prepare(`INSERT INTO leases (name, instance, pid, taken_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (name) DO UPDATE SET instance = excluded.instance, pid = excluded.pid, taken_at = excluded.taken_at`);
  const dropLease = db.prepare('DELETE FROM leases WHERE name = ? AND instance = ?');
  const held = new Set<string>();
  const claim = db.transaction((name: string) => {
    const holder = readLease.get(name);
    if (holder && holder.instance !== instanceId && alive(holder.instance)) return false;
    writeLease.run(name, instanceId, process.pid, Date.now());
    return true;
  });

  return {
    /**
     * The lease `name` for as long as the store is open, or undefined while another live instance,
     * or this one, holds it: a lease has one holder at a time (the row names only the instance, so
     * a second holder in this instance would see the row dropped under it by the first's release).
     */
    take(name: string): Lease | undefined {
      if (held.has(name) || !claim.immediate(name)) return undefined;
      held.add(name);
      return {
        async release() {
          if (!held.delete(name)) return;
          if (db.open) dropLease.run(name, instanceId);
        },
      };
    },
    /** Gives back every lease, then this instance's lock (before `db` closes). */
    close() {
      if (db.open) for (const name of held) dropLease.run(name, instanceId);
      held.clear();
      if (own?.open) {
        rmSync(lockOf(instanceId), { force: true });
        own.close();
      }
    },
  };
}
