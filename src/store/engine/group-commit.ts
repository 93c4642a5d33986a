import { closeSync, fdatasync, openSync } from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { StoreError } from '../store.js';

/**
 * Group commit for SQLite: writes asked for in the same turn of the event loop run in one
 * `BEGIN IMMEDIATE` transaction, so N concurrent debits cost one sync instead of N. One that
 * throws is rolled back alone and rejects only its caller (the others run again, each in a
 * savepoint).
 *
 * The transaction commits to the WAL without syncing it (`synchronous = NORMAL`, set for the
 * connection when its group commit is made); the WAL is then
 * synced on libuv's thread pool, so the event loop keeps serving while the disk works instead of
 * blocking in the commit. `write` settles after that sync, so nothing is answered before it is
 * durable (as with `FULL`); `decide` settles at the commit, for a caller that has work to do
 * meanwhile (the gateway forwards a paid call) and awaits `durable` before it answers.
 *
 * @example
 * const { write } = groupCommit(db);
 * const balance = await write(() => debit.run(params));
 */
export function groupCommit(db: Database.Database): GroupCommit {
  let group = groups.get(db);
  if (!group) groups.set(db, (group = newGroupCommit(db)));
  return group;
}

/**
 * `fn` of a `write` or `decide` may run twice (a group whose job threw runs again, each job in a
 * savepoint of its own): it must change nothing but the database, as an operation on PostgreSQL,
 * which may run again too.
 */
export type GroupCommit = {
  write<T>(fn: () => T): Promise<T>;
  decide<T>(fn: () => T): Promise<{ value: T; durable: Promise<void> }>;
  /**
   * Runs `fn` now, committing to the WAL without a sync: durable with the next group's sync. Only
   * for a write whose caller answers nothing on it alone (an x402 hold, a kept result: the
   * settlement claim that follows syncs them).
   */
  unsynced<T>(fn: () => T): T;
};
// One group commit per connection, shared by every repository on it: their writes share syncs too.
const groups = new WeakMap<Database.Database, GroupCommit>();

function newGroupCommit(db: Database.Database): GroupCommit {
  type Job = { fn: () => unknown; early: boolean; resolve(value: unknown): void; reject(error: unknown): void };
  type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };
  let queue: Job[] = [];
  // Commits write the WAL without syncing it; `walSync` syncs it off the event loop. Set once for
  // the connection: what else writes on it outside a group (a lease row) needs no sync of its own.
  db.pragma('synchronous = NORMAL');
  // A commit past this many WAL pages copies them into the database file first (a checkpoint, on
  // the event loop). Each debit rewrites the same few pages (its key's row, the ends of the
  // ledger's b-trees), and a checkpoint copies a page once however often the WAL holds it: at
  // 10,000 (a WAL of up to ~40 MB) instead of SQLite's 1,000, each debit's share of that copying is
  // a fraction, for a rarer, longer pause.
  db.pragma('wal_autocheckpoint = 10000');
  // Prepared once: `db.transaction` would build four wrapper functions per call, which cost more
  // than the statements they run.
  const begin = db.prepare('BEGIN IMMEDIATE');
  const commit = db.prepare('COMMIT');
  const rollback = db.prepare('ROLLBACK');
  const savepoint = db.prepare('SAVEPOINT job');
  const release = db.prepare('RELEASE job');
  const rollbackTo = db.prepare('ROLLBACK TO job');
  const sync = walSync(db);

  const inTransaction = <T>(run: () => T): T => {
    begin.run();
    try {
      const value = run();
      commit.run();
      return value;
    } catch (error) {
      if (db.inTransaction) rollback.run();
      throw error;
    }
  };
  /** Each job in a savepoint of its own: one that throws is rolled back alone; an error after which SQLite rolled back the whole transaction itself fails them all. */
  const oneByOne = (jobs: Job[]): Outcome[] =>
    jobs.map((job) => {
      savepoint.run();
      try {
        const value = job.fn();
        release.run();
        return { ok: true, value };
      } catch (error) {
        if (!db.inTransaction) throw error;
        rollbackTo.run();
        release.run();
        return { ok: false, error };
      }
    });

  /**
   * Runs the jobs in one `BEGIN IMMEDIATE` transaction and commits it: first all together, with no
   * savepoints (each costs two statements and a copy of every page its job changes); if one throws,
   * the transaction is rolled back and, when there were several, the group runs again with each job
   * in its own savepoint (a lone job's failure is its own).
   *
   * @example runGroup([job]) // [{ ok: true, value: 1 }]
   */
  const runGroup = (jobs: Job[]): Outcome[] => {
    try {
      return inTransaction(() => jobs.map((job): Outcome => ({ ok: true, value: job.fn() })));
    } catch (error) {
      if (jobs.length === 1) throw error;
      return inTransaction(() => oneByOne(jobs));
    }
  };

  const flush = () => {
    const jobs = queue;
    queue = [];
    let outcomes: Outcome[];
    try {
      // Inside the try: a write queued as the store closes is refused, not thrown out of the loop.
      outcomes = runGroup(jobs);
    } catch (error) {
      for (const job of jobs) job.reject(error);
      return;
    }
    const durable = sync().catch((error: unknown) => {
      throw new StoreError(`cannot sync the SQLite WAL to disk: ${(error as Error).message}`, { cause: error });
    });
    durable.catch(() => {}); // each caller is told below
    jobs.forEach((job, i) => {
      const outcome = outcomes[i]!;
      if (!outcome.ok) job.reject(outcome.error);
      else if (job.early) job.resolve({ value: outcome.value, durable });
      else durable.then(() => job.resolve(outcome.value), job.reject);
    });
  };

  const enqueue = (fn: () => unknown, early: boolean) =>
    new Promise<unknown>((resolve, reject) => {
      if (queue.length === 0) setImmediate(flush);
      queue.push({ fn, early, resolve, reject });
    });
  return {
    write: <T>(fn: () => T) => enqueue(fn, false) as Promise<T>,
    decide: <T>(fn: () => T) => enqueue(fn, true) as Promise<{ value: T; durable: Promise<void> }>,
    unsynced: <T>(fn: () => T): T => fn(),
  };
}

/**
 * Syncs the connection's WAL file (fdatasync on the thread pool). An in-memory database has
 * nothing to sync. The WAL exists once the database is open in WAL mode and keeps its inode while
 * any connection is open, so one descriptor, opened with the connection, serves for its life; it
 * is closed with the connection (`closeGroupCommit`), once no sync is in flight or waiting: a
 * commit made before the close still has its sync, on the WAL it was written to (closing removes
 * the file, after copying it into the database, so a descriptor opened then would find none).
 */
function walSync(db: Database.Database): () => Promise<void> {
  if (db.memory || db.name === '') return async () => {};
  const wal = `${path.resolve(db.name)}-wal`;
  const open = () => openSync(wal, 'r');
  let fd: number | undefined;
  try {
    fd = open();
  } catch {
    // not there yet: opened at the first sync
  }
  let inFlight = 0;
  // The sync running, and the one waiting for it to end (see below).
  let running: Promise<void> | undefined;
  let next: Promise<void> | undefined;
  const closeIfIdle = () => {
    if (inFlight === 0 && next === undefined && fd !== undefined && !db.open) {
      closeSync(fd);
      fd = undefined;
    }
  };
  closers.set(db, closeIfIdle);
  // Linux reports a failed write-back once, to one sync, and may then count those pages clean: a
  // later sync succeeding would not make what was written before it durable. So after one failure
  // every sync fails, until turnpike is restarted (SQLite then recovers the WAL as it is on disk).
  let broken: Error | undefined;
  const syncNow = () =>
    new Promise<void>((resolve, reject) => {
      if (broken) {
        reject(new Error(`an earlier sync failed (${broken.message}), so nothing written since can be shown durable; restart turnpike`));
        return;
      }
      try {
        fd ??= open();
      } catch (error) {
        reject(error);
        return;
      }
      inFlight++;
      fdatasync(fd, (error) => {
        inFlight--;
        closeIfIdle();
        if (error) {
          broken ??= error;
          reject(error);
        } else resolve();
      });
    });
  // One sync at a time: a commit made while one runs may not be in it, so it waits for the next,
  // which starts when that one ends and covers every commit made meanwhile (at 16 concurrent
  // debits, one sync per ~N groups instead of one each; each costs ~100 µs of CPU here).
  const start = (): Promise<void> => {
    const sync = syncNow();
    running = sync;
    const settled = () => {
      if (running === sync) running = undefined;
    };
    sync.then(settled, settled);
    return sync;
  };
  return () => {
    if (!running) return start();
    next ??= running
      .catch(() => {})
      .then(() => {
        next = undefined;
        return start();
      });
    return next;
  };
}

const closers = new WeakMap<Database.Database, () => void>();

/** Lets go of the WAL descriptor of a connection that was just closed (now, or after its last sync). */
export function closeGroupCommit(db: Database.Database): void {
  closers.get(db)?.();
}
