import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import pg from 'pg';
import { type PostgresStore, openPostgresStore } from '../../src/store/postgres.js';
import { type SqliteStore, openSqliteStore } from '../../src/store/sqlite.js';

/** The PostgreSQL server the tests use: this machine's (trust auth, database `test`) unless told otherwise. */
const SERVER_URL = process.env.TURNPIKE_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/**
 * This test process's own database on that server, made at start and dropped when its tests are done
 * (its schemas with it).
 *
 * @example `${POSTGRES_URL}?schema=${freshSchema()}` // postgres://postgres@127.0.0.1:5432/tp_test_4242_k3j9a?schema=tp_test_4242_x1y2
 */
const DATABASE = `tp_test_${process.pid}_${Math.random().toString(36).slice(2, 10)}`;
export const POSTGRES_URL = (() => {
  const url = new URL(SERVER_URL);
  url.pathname = `/${DATABASE}`;
  return url.toString();
})();

async function reachable(): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: SERVER_URL, connectionTimeoutMillis: 2_000 });
  try {
    await client.connect();
    await client.query(`CREATE DATABASE ${DATABASE}`);
    return undefined;
  } catch (error) {
    return `PostgreSQL at ${SERVER_URL} is not reachable or cannot make a database (${(error as Error).message})`;
  } finally {
    await client.end().catch(() => undefined);
  }
}

const unreachable = await reachable();
// CI must test both backends: there a missing PostgreSQL fails the run instead of skipping it.
if (unreachable && process.env.CI) throw new Error(`${unreachable}; .ci/run starts it, see there`);

/**
 * Drops this process's database, its schemas with it: every run starts from nothing. Not WITH (FORCE):
 * that would cut the lease session of a store a test left open, which stops this process (SIGTERM).
 * PostgreSQL waits up to 5 s for the sessions of closed stores to end.
 */
after(async () => {
  if (unreachable) return;
  const client = new pg.Client({ connectionString: SERVER_URL });
  await client.connect();
  try {
    await client.query(`DROP DATABASE IF EXISTS ${DATABASE}`);
  } catch (error) {
    throw new Error(`a PostgreSQL store this test file opened is still open: close it (${(error as Error).message})`);
  } finally {
    await client.end();
  }
});

/** A new, empty schema name of this test process. */
export function freshSchema(): string {
  return `tp_test_${process.pid}_${Math.random().toString(36).slice(2, 10)}`;
}

export type Backend =
  | { name: 'sqlite'; skip: false; open(): Promise<SqliteStore>; shared(): () => Promise<SqliteStore> }
  | { name: 'postgres'; skip: string | false; open(): Promise<PostgresStore>; shared(): () => Promise<PostgresStore> };

const tempDir = () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-store-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
};

/**
 * The store backends every store test runs against: SQLite (a file in a temp directory) and
 * PostgreSQL (a schema of its own). Use as
 * `for (const backend of backends) describe(`… (${backend.name})`, { skip: backend.skip }, () => …)`.
 */
export const backends: Backend[] = [
  {
    name: 'sqlite',
    skip: false,
    open: () => openSqliteStore({ path: path.join(tempDir(), 'store.db') }),
    /** Opens stores on one database, as several instances would. */
    shared() {
      const file = path.join(tempDir(), 'store.db');
      return () => openSqliteStore({ path: file });
    },
  },
  {
    name: 'postgres',
    skip: unreachable ?? false,
    // Small pools: test files run two at a time on one server with max_connections 100.
    open: () => openPostgresStore({ url: POSTGRES_URL, schema: freshSchema(), max: 3 }),
    shared() {
      const schema = freshSchema();
      return () => openPostgresStore({ url: POSTGRES_URL, schema, max: 3 });
    },
  },
];
