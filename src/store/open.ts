import type { Logger } from 'pino';
import { openSqliteStore } from './sqlite.js';
import { type Store, StoreError } from './store.js';

const EXPECTED = 'expected sqlite:<path>, sqlite::memory: or postgres://user:password@host:port/database';

/**
 * Opens the store a URL names: `sqlite:<path>` (or `sqlite::memory:`), or `postgres://…` /
 * `postgresql://…`, optionally `?schema=name` (several instances may share it).
 *
 * @example
 * const store = await openStore('sqlite:.turnpike/turnpike.db', logger);
 * await store.health(); // { writable: true, schemaVersion: 2 }
 */
export async function openStore(url: string, logger?: Logger): Promise<Store> {
  if (url.startsWith('sqlite:')) {
    const file = url.slice('sqlite:'.length);
    if (!file) throw new StoreError(`the store URL sqlite: needs a path; ${EXPECTED}`);
    return openSqliteStore({ path: file, logger });
  }
  if (/^postgres(ql)?:\/\//.test(url)) {
    // `?schema=name` puts turnpike's tables in a schema of their own (one per environment, or per
    // test run); `?pool=N` sizes the connection pool (default 10), to fit many instances under the
    // server's max_connections.
    const parsed = new URL(url);
    const schema = parsed.searchParams.get('schema') ?? undefined;
    const pool = parsed.searchParams.get('pool');
    if (pool !== null && !/^[1-9]\d{0,2}$/.test(pool))
      throw new StoreError(`the store URL's pool=${pool}: expected a number of connections from 1 to 999`);
    parsed.searchParams.delete('schema');
    parsed.searchParams.delete('pool');
    // Loaded only for PostgreSQL: a SQLite gateway does not hold the pg driver in memory.
    const { openPostgresStore } = await import('./postgres.js');
    return openPostgresStore({
      url: parsed.toString(),
      ...(schema ? { schema } : {}),
      ...(pool ? { max: Number(pool) } : {}),
      ...(logger ? { logger } : {}),
    });
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1];
  throw new StoreError(`unsupported store URL ${scheme ? `scheme "${scheme}:"` : `"${url}" (no scheme)`}; ${EXPECTED}`);
}
