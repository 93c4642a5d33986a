import type Database from 'better-sqlite3';
import type { Logger } from 'pino';
import { type AppliedMigration, type Migration, checkMigrations, checkUnchanged, migrationChecksum } from './migrations.js';
import { StoreError } from './store.js';

/**
 * Brings a SQLite database up to `list`. Each pending migration runs in its own `BEGIN IMMEDIATE`
 * transaction that first re-reads `schema_migrations`: of several processes opening one new file
 * at once, one applies it and the others find it applied. A failing migration rolls back whole
 * (SQLite DDL is transactional) and the error names it; the ones before it stay applied.
 */
export function migrateSqlite(db: Database.Database, list: readonly Migration[], logger?: Logger): void {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at BIGINT NOT NULL
  )`);
  const selectApplied = db.prepare<[], AppliedMigration>('SELECT version, checksum FROM schema_migrations');
  const selectOne = db.prepare<[number], AppliedMigration>('SELECT version, checksum FROM schema_migrations WHERE version = ?');
  const record = db.prepare('INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)');

  checkMigrations(list, selectApplied.all());
  for (const migration of list) {
    const applied = db
      .transaction(() => {
        const row = selectOne.get(migration.version);
        if (row) {
          checkUnchanged(migration, row);
          return false;
        }
        try {
          db.exec(migration.sqlite ?? migration.sql);
        } catch (error) {
          throw new StoreError(`migration ${migration.version} (${migration.name}) failed: ${(error as Error).message}`, {
            cause: error,
          });
        }
        record.run(migration.version, migration.name, migrationChecksum(migration), Date.now());
        return true;
      })
      .immediate();
    if (applied) logger?.info({ version: migration.version, name: migration.name }, 'applied store migration');
  }
}
