import { createHash, randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { type Migration, migrations as shipped } from './migrations.js';
import { sqliteJournal } from './sqlite-journal.js';
import { type Store, StoreError } from './store.js';

export type SqliteStoreOptions = {
  /** File path, or `:memory:` for tests. */
  path: string;
  /** Only tests pass their own list. */
  migrations?: readonly Migration[];
};

export type SqliteStore = Store & {
  readonly kind: 'sqlite';
  /**
   * Runs `fn` in a `BEGIN IMMEDIATE` transaction: the write lock is taken up front, so a
   * check-then-write inside it (a balance, a nonce) cannot interleave with another writer.
   */
  immediate<T>(fn: (db: Database.Database) => T): T;
};

const checksum = (m: Migration) => createHash('sha256').update(m.sql).digest('hex').slice(0, 16);

/**
 * Opens (creating if needed) the SQLite store and brings its schema up to date.
 *
 * `synchronous = FULL`: once we answer a client, the payment record behind the answer survives a
 * power cut, not only a process crash. WAL keeps readers off the writer's back.
 *
 * @example
 * const store = await openSqliteStore({ path: '.turnpike/turnpike.db' });
 */
export async function openSqliteStore(options: SqliteStoreOptions): Promise<SqliteStore> {
  if (options.path !== ':memory:') mkdirSync(path.dirname(path.resolve(options.path)), { recursive: true });
  let db: Database.Database;
  try {
    db = new Database(options.path, { timeout: 5000 });
  } catch (error) {
    throw new StoreError(`cannot open SQLite database ${options.path}: ${(error as Error).message}`);
  }
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    migrate(db, options.migrations ?? shipped);
  } catch (error) {
    db.close();
    throw error;
  }

  const immediate = <T>(fn: (db: Database.Database) => T): T => db.transaction(() => fn(db)).immediate();
  const upsertMeta = db.prepare(
    'INSERT INTO meta (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at',
  );
  const schemaVersion = db.prepare<[], { v: number | null }>('SELECT MAX(version) AS v FROM schema_migrations');

  return {
    kind: 'sqlite',
    journal: sqliteJournal(db),
    immediate,
    async health() {
      if (!db.open) throw new StoreError('the store is closed');
      upsertMeta.run('heartbeat', randomUUID(), Date.now());
      return { writable: true, schemaVersion: schemaVersion.get()?.v ?? 0 };
    },
    async close() {
      if (db.open) db.close();
    },
  };
}

/** Applies pending migrations, one IMMEDIATE transaction each, so concurrent openers apply each once. */
function migrate(db: Database.Database, list: readonly Migration[]) {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at BIGINT NOT NULL
  )`);
  const applied = () =>
    new Map(
      db
        .prepare<[], { version: number; name: string; checksum: string }>('SELECT version, name, checksum FROM schema_migrations')
        .all()
        .map((row) => [row.version, row]),
    );

  const known = new Set(list.map((m) => m.version));
  const unknown = [...applied().keys()].filter((v) => !known.has(v));
  if (unknown.length > 0) {
    throw new StoreError(
      `the database has schema version ${Math.max(...unknown)}, newer than this turnpike knows; upgrade turnpike or use another data directory`,
    );
  }

  for (const migration of list) {
    db.transaction(() => {
      const row = applied().get(migration.version);
      if (row) {
        if (row.checksum !== checksum(migration)) {
          throw new StoreError(
            `migration ${migration.version} (${migration.name}) was changed after it was applied; shipped migrations must not be edited, add a new one`,
          );
        }
        return;
      }
      try {
        db.exec(migration.sql);
      } catch (error) {
        throw new StoreError(`migration ${migration.version} (${migration.name}) failed: ${(error as Error).message}`);
      }
      db.prepare('INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)').run(
        migration.version,
        migration.name,
        checksum(migration),
        Date.now(),
      );
    }).immediate();
  }
}
