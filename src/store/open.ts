import { openSqliteStore } from './sqlite.js';
import { type Store, StoreError } from './store.js';

/**
 * Opens the store a URL names: `sqlite:<path>` (or `sqlite::memory:`).
 *
 * @example const store = await openStore('sqlite:.turnpike/turnpike.db');
 */
export async function openStore(url: string): Promise<Store> {
  if (url.startsWith('sqlite:')) {
    const file = url.slice('sqlite:'.length);
    if (!file) throw new StoreError('sqlite: URL needs a path, e.g. sqlite:.turnpike/turnpike.db');
    return openSqliteStore({ path: file });
  }
  if (/^postgres(ql)?:\/\//.test(url)) {
    throw new StoreError('PostgreSQL is not supported yet; use sqlite:<path>');
  }
  throw new StoreError(`unsupported store URL "${url.split(':')[0]}:…"; expected sqlite:<path>`);
}
