import type { Logger } from 'pino';
import { openSqliteStore } from './sqlite.js';
import { type Store, StoreError } from './store.js';

const EXPECTED = 'expected sqlite:<path> or sqlite::memory:';

/**
 * Opens the store a URL names: `sqlite:<path>` (or `sqlite::memory:`). `postgres://` is
 * recognised so that its error says it is not supported yet, rather than that the URL is wrong.
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
    throw new StoreError('PostgreSQL is not supported yet; use sqlite:<path>');
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1];
  throw new StoreError(`unsupported store URL ${scheme ? `scheme "${scheme}:"` : `"${url}" (no scheme)`}; ${EXPECTED}`);
}
