import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { Logger } from 'pino';
import { closeGroupCommit } from './engine/group-commit.js';
import { sqliteRunner } from './engine/sqlite.js';
import { metaStore } from './meta.js';
import { type Migration, migrations as shipped } from './migrations.js';
import { creditStore } from './credits/ops.js';
import { eventStore } from './events/ops.js';
import { journalStore } from './journal/ops.js';
import { sqliteLeases } from './sqlite-leases.js';
import { operatorStore } from './operators/ops.js';
import { postpaidStore } from './postpaid/ops.js';
import { migrateSqlite } from './sqlite-migrate.js';
import { type Store, StoreError } from './store.js';

export type SqliteStoreOptions = {
  /** File path (parent directories are created), or `:memory:` for tests. */
  path: string;
  /** Told about each migration applied. */
  logger?: Logger;
  /** Only tests pass their own list. */
  migrations?: readonly Migration[];
};

export type SqliteStore = Store & {
  readonly kind: 'sqlite';
  /**
   * Runs `fn` in a `BEGIN IMMEDIATE` transaction: the write lock is taken up front, so a
   * check-then-write inside it (a balance, a nonce) cannot interleave with another writer.
   * `fn` is synchronous: nothing may be awaited while the lock is held. It commits without a WAL
   * sync (the connection runs at `synchronous = NORMAL`; only the group commit's writes are
   * synced), so nothing may be answered on its writes alone: for tests and maintenance.
   */
  immediate<T>(fn: (db: Database.Database) => T): T;
};

/** How long a writer waits for another process's write lock before failing with SQLITE_BUSY. */
const BUSY_TIMEOUT_MS = 5000;

/**
 * Switches a new file to WAL. Of several processes opening one new file at once, the switch can
 * find another's lock and fail at once with SQLITE_BUSY (SQLite does not wait for it there), so it
 * is retried within the busy timeout.
 */
async function walMode(db: Database.Database): Promise<void> {
  const deadline = Date.now() + BUSY_TIMEOUT_MS;
  for (;;) {
    try {
      db.pragma('journal_mode = WAL');
      return;
    } catch (error) {
      if ((error as { code?: string }).code !== 'SQLITE_BUSY' || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 10 + Math.random() * 40));
    }
  }
}

/**
 * Opens (creating if needed) the SQLite store and brings its schema up to date.
 *
 * Once we answer a client, the payment record behind the answer survives a power cut, not only a
 * process crash: migrations commit with `synchronous = FULL`; every write after them goes through
 * the group commit, which syncs the WAL itself before it settles (and leaves the connection at
 * `NORMAL`). A lease row is the one write outside it, and needs no sync: it names a live instance,
 * and a power cut leaves none. WAL keeps readers off the writer's back.
 *
 * @example
 * const store = await openSqliteStore({ path: '.turnpike/turnpike.db', logger });
 */
export async function openSqliteStore(options: SqliteStoreOptions): Promise<SqliteStore> {
  const file = options.path;
  let db: Database.Database;
  try {
    if (file !== ':memory:') mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    db = new Database(file, { timeout: BUSY_TIMEOUT_MS });
  } catch (error) {
    throw new StoreError(`cannot open SQLite database ${file}: ${(error as Error).message}`, { cause: error });
  }
  try {
    await walMode(db);
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    migrateSqlite(db, options.migrations ?? shipped, options.logger);
  } catch (error) {
    db.close();
    if (error instanceof StoreError) throw error;
    throw new StoreError(`cannot open SQLite database ${file}: ${(error as Error).message}`, { cause: error });
  }

  const instanceId = randomUUID();
  let leases: ReturnType<typeof sqliteLeases>;
  try {
    leases = sqliteLeases(db, file, instanceId, BUSY_TIMEOUT_MS);
  } catch (error) {
    db.close();
    const why = (error as Error).message;
    throw new StoreError(`cannot lock this instance's file in ${file}.leases/ (make it writable): ${why}`, { cause: error });
  }
  const lease = async (name: string) => leases.take(name);
  const runner = sqliteRunner(db);
  const meta = metaStore(runner);
  await lease(`instance:${instanceId}`);

  return {
    kind: 'sqlite',
    instanceId,
    lease,
    // A lease lives as long as this process's lock on its file: never lost while it runs.
    holdsLeases: () => true,
    journal: journalStore(runner, instanceId),
    credits: creditStore(runner),
    operators: operatorStore(runner),
    postpaid: postpaidStore(runner),
    events: eventStore(runner),
    immediate: (fn) => db.transaction(() => fn(db)).immediate(),
    instanceSecret: meta.instanceSecret,
    revokeSession: meta.revokeSession,
    sessionRevoked: meta.sessionRevoked,
    async health() {
      if (!db.open) throw new StoreError('the store is closed');
      try {
        return { writable: true, schemaVersion: await meta.heartbeat() };
      } catch (error) {
        throw new StoreError(`the store cannot take a write: ${(error as Error).message}`, { cause: error });
      }
    },
    async close() {
      leases.close();
      if (db.open) db.close();
      closeGroupCommit(db);
    },
  };
}
