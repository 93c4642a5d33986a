/**
 * The schema, as an append-only list: a migration that has shipped is never edited (its checksum
 * is checked at start-up), a change is a new migration. SQL is kept to what SQLite and PostgreSQL
 * both run: BIGINT money, TEXT ids, CHECK and UNIQUE constraints for invariants.
 */
export type Migration = { version: number; name: string; sql: string };

export const migrations: readonly Migration[] = [
  {
    version: 1,
    name: 'meta',
    sql: `
      CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at BIGINT NOT NULL
      );
    `,
  },
];
