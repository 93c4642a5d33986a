import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { migrations } from '../../src/store/migrations.js';
import { openStore } from '../../src/store/open.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { StoreError } from '../../src/store/store.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-store-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = () => path.join(dir, `db-${++n}`, 'turnpike.db');

const rows = (file: string, sql: string) => {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare(sql).all();
  } finally {
    db.close();
  }
};

describe('SQLite store', () => {
  test('opens in WAL mode with synchronous FULL and foreign keys on', async () => {
    const file = fresh();
    const store = await openSqliteStore({ path: file });
    const pragmas = store.immediate((db) => ({
      journal: db.pragma('journal_mode', { simple: true }),
      synchronous: db.pragma('synchronous', { simple: true }),
      foreignKeys: db.pragma('foreign_keys', { simple: true }),
    }));
    assert.deepEqual(pragmas, { journal: 'wal', synchronous: 2, foreignKeys: 1 });
    await store.close();
  });

  test('applies migrations once; reopening changes nothing', async () => {
    const file = fresh();
    await (await openSqliteStore({ path: file })).close();
    await (await openSqliteStore({ path: file })).close();
    const applied = rows(file, 'SELECT version FROM schema_migrations ORDER BY version');
    assert.deepEqual(applied, migrations.map((m) => ({ version: m.version })));
  });

  test('two processes opening one new file at once apply each migration exactly once', async () => {
    const file = fresh();
    const opener = `
      import { openSqliteStore } from ${JSON.stringify(path.resolve('src/store/sqlite.ts'))};
      const store = await openSqliteStore({ path: ${JSON.stringify(file)} });
      await store.health();
      await store.close();
    `;
    const run = () =>
      new Promise<number>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', opener], { stdio: 'inherit' });
        child.on('exit', (code) => resolve(code ?? 1));
      });
    assert.deepEqual(await Promise.all([run(), run(), run()]), [0, 0, 0]);
    const counts = rows(file, 'SELECT version, COUNT(*) AS c FROM schema_migrations GROUP BY version');
    assert.deepEqual(counts, migrations.map((m) => ({ version: m.version, c: 1 })));
  });

  test('refuses a database whose applied migration was edited', async () => {
    const file = fresh();
    await (await openSqliteStore({ path: file })).close();
    const edited = migrations.map((m) => (m.version === 1 ? { ...m, sql: `${m.sql} -- edited` } : m));
    await assert.rejects(openSqliteStore({ path: file, migrations: edited }), (e: unknown) =>
      e instanceof StoreError && /migration 1 \(meta\) was changed/.test(e.message),
    );
  });

  test('refuses a database newer than this build', async () => {
    const file = fresh();
    const newer = [...migrations, { version: 99, name: 'future', sql: 'CREATE TABLE future (id TEXT)' }];
    await (await openSqliteStore({ path: file, migrations: newer })).close();
    await assert.rejects(openSqliteStore({ path: file }), /schema version 99, newer than this turnpike knows/);
  });

  test('a failing migration rolls back whole and is named', async () => {
    const file = fresh();
    const version = migrations.at(-1)!.version + 1;
    const broken = [...migrations, { version, name: 'half', sql: 'CREATE TABLE half_done (id TEXT); CREATE TABLE oops (' }];
    await assert.rejects(openSqliteStore({ path: file, migrations: broken }), new RegExp(`migration ${version} \\(half\\) failed`));
    assert.deepEqual(rows(file, "SELECT name FROM sqlite_master WHERE name = 'half_done'"), []);
    assert.deepEqual(rows(file, `SELECT version FROM schema_migrations WHERE version = ${version}`), []);
  });

  test('health() writes; after close() it rejects with a StoreError', async () => {
    const store = await openSqliteStore({ path: ':memory:' });
    assert.deepEqual(await store.health(), { writable: true, schemaVersion: migrations.at(-1)!.version });
    await store.close();
    await assert.rejects(store.health(), StoreError);
  });
});

describe('openStore', () => {
  test('opens sqlite: URLs and explains the others', async () => {
    const store = await openStore(`sqlite:${fresh()}`);
    assert.equal(store.kind, 'sqlite');
    await store.close();
    await assert.rejects(openStore('postgres://localhost/test'), /PostgreSQL is not supported yet/);
    await assert.rejects(openStore('mysql://x'), /unsupported store URL "mysql:…"/);
    await assert.rejects(openStore('sqlite:'), /needs a path/);
  });
});
