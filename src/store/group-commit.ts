import type Database from 'better-sqlite3';

/**
 * Group commit for SQLite: writes asked for in the same turn of the event loop run in one
 * `BEGIN IMMEDIATE` transaction, so N concurrent debits cost one fsync instead of N. Each write
 * runs in its own savepoint: one that throws is rolled back alone and rejects only its caller.
 * Every caller's promise settles after the commit, so nothing is answered before it is durable.
 *
 * @example
 * const write = groupCommit(db);
 * const balance = await write(() => debit.run(params));
 */
export function groupCommit(db: Database.Database): Write {
  let write = writers.get(db);
  if (!write) writers.set(db, (write = newGroupCommit(db)));
  return write;
}

type Write = <T>(fn: () => T) => Promise<T>;
// One writer per connection, shared by every repository on it: their writes share commits too.
const writers = new WeakMap<Database.Database, Write>();

function newGroupCommit(db: Database.Database): Write {
  type Job = { fn: () => unknown; resolve(value: unknown): void; reject(error: unknown): void };
  let queue: Job[] = [];

  const flush = () => {
    const jobs = queue;
    queue = [];
    const outcomes: ({ ok: true; value: unknown } | { ok: false; error: unknown })[] = [];
    try {
      db.transaction(() => {
        for (const job of jobs) {
          try {
            outcomes.push({ ok: true, value: db.transaction(job.fn)() });
          } catch (error) {
            outcomes.push({ ok: false, error });
          }
        }
      }).immediate();
    } catch (error) {
      for (const job of jobs) job.reject(error);
      return;
    }
    jobs.forEach((job, i) => {
      const outcome = outcomes[i]!;
      if (outcome.ok) job.resolve(outcome.value);
      else job.reject(outcome.error);
    });
  };

  return function write<T>(fn: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (queue.length === 0) setImmediate(flush);
      queue.push({ fn, resolve: resolve as (value: unknown) => void, reject });
    });
  };
}
