import type pg from 'pg';
import type { Logger } from 'pino';
import { type AppliedMigration, type Migration, checkMigrations, checkUnchanged, migrationChecksum } from './migrations.js';
import { transaction } from './engine/postgres.js';
import { StoreError } from './store.js';

/** Any constant: every turnpike opening this database serializes its migrations on it. */
const MIGRATION_LOCK = 0x7475_726e;

/**
 * Brings a PostgreSQL schema up to `list`, with the rules of the SQLite runner: each pending
 * migration in its own transaction, under a transaction-scoped advisory lock, re-reading
 * `schema_migrations` first, so that of several instances starting together one applies it and
 * the others find it applied. PostgreSQL DDL is transactional: a failing migration leaves nothing.
 * `schema` (the pool's search_path, validated by the caller) is created under the same lock:
 * `CREATE SCHEMA IF NOT EXISTS` is not safe against itself, two at once fail one with
 * `duplicate key value violates unique constraint "pg_namespace_nspname_index"`.
 *
 * @example await migratePostgres(pool, migrations, logger, 'turnpike'); // several instances at once: one creates, all start
 */
export async function migratePostgres(pool: pg.Pool, list: readonly Migration[], logger?: Logger, schema?: string): Promise<void> {
  await transaction(pool, async (db) => {
    await db.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    if (schema) await db.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await db.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version INTEGER PRIMARY KEY,
      name TEXT NOT NULL,
      checksum TEXT NOT NULL,
      applied_at BIGINT NOT NULL
    )`);
  });
  const applied = async (db: pg.PoolClient | pg.Pool) =>
    (await db.query<AppliedMigration>('SELECT version, checksum FROM schema_migrations')).rows;
  checkMigrations(list, await applied(pool));
  for (const migration of list) {
    const ran = await transaction(pool, async (db) => {
      await db.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      const row = (await applied(db)).find((a) => a.version === migration.version);
      if (row) {
        checkUnchanged(migration, row);
        return false;
      }
      try {
        await db.query(migration.sql);
      } catch (error) {
        throw new StoreError(`migration ${migration.version} (${migration.name}) failed: ${(error as Error).message}`, { cause: error });
      }
      await db.query('INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)', [
        migration.version,
        migration.name,
        migrationChecksum(migration),
        Date.now(),
      ]);
      return true;
    });
    if (ran) logger?.info({ version: migration.version, name: migration.name }, 'applied store migration');
  }
}
