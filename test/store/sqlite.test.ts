import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { pino } from 'pino';
import { type Migration, migrationChecksum, migrations } from '../../src/store/migrations.js';
import { openStore } from '../../src/store/open.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { migrateSqlite } from '../../src/store/sqlite-migrate.js';
import { StoreError } from '../../src/store/store.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = () => path.join(dir, `db-${++n}`, 'turnpike.db');
const latest = migrations.at(-1)!.version;

/** Runs `fn` on a second connection to `file`, as another process would see it. */
const peek = <T>(file: string, fn: (db: Database.Database) => T): T => {
  const db = new Database(file);
  try {
    return fn(db);
  } finally {
    db.close();
  }
};
const rows = <T = unknown>(file: string, sql: string) => peek(file, (db) => db.prepare(sql).all() as T[]);
const storeError = (pattern: RegExp) => (e: unknown) => e instanceof StoreError && pattern.test(e.message);

describe('SQLite store', () => {
  test('opens in WAL mode with synchronous NORMAL (its group commit syncs the WAL), checkpoints every 10,000 pages, a busy timeout and foreign keys on', async () => {
    const store = await openSqliteStore({ path: fresh() });
    const pragmas = store.immediate((db) => ({
      journal: db.pragma('journal_mode', { simple: true }),
      synchronous: db.pragma('synchronous', { simple: true }),
      checkpointEvery: db.pragma('wal_autocheckpoint', { simple: true }),
      busyTimeout: db.pragma('busy_timeout', { simple: true }),
      foreignKeys: db.pragma('foreign_keys', { simple: true }),
    }));
    assert.deepEqual(pragmas, { journal: 'wal', synchronous: 1, checkpointEvery: 10000, busyTimeout: 5000, foreignKeys: 1 });
    await store.close();
  });

  test('an open debit is one row of one b-tree: open_debits is keyed by the debit id, WITHOUT ROWID, with no other index', async () => {
    const file = fresh();
    await (await openSqliteStore({ path: file })).close();
    const schema = rows<{ type: string; name: string; sql: string | null }>(
      file,
      "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'open_debits' ORDER BY type, name",
    );
    assert.deepEqual(
      schema.map((r) => [r.type, r.name]),
      [['table', 'open_debits']],
    );
    assert.match(schema[0]!.sql!, /debit_id TEXT PRIMARY KEY[\s\S]*\) WITHOUT ROWID$/);
  });

  test('applies each migration once, with its checksum; reopening changes nothing', async () => {
    const file = fresh();
    const logged: { version?: number; msg: string }[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        logged.push(
          ...chunk
            .toString()
            .trim()
            .split('\n')
            .map((l: string) => JSON.parse(l)),
        );
        done();
      },
    });
    const logger = pino(sink);
    type Row = { version: number; name: string; checksum: string };
    const applied = () => rows<Row>(file, 'SELECT * FROM schema_migrations ORDER BY version');
    await (await openSqliteStore({ path: file, logger })).close();
    const first = applied();
    await (await openSqliteStore({ path: file, logger })).close();

    assert.deepEqual(
      first.map(({ version, name, checksum }) => ({ version, name, checksum })),
      migrations.map((m) => ({ version: m.version, name: m.name, checksum: migrationChecksum(m) })),
    );
    assert.deepEqual(applied(), first, 'reopening applies nothing');
    assert.deepEqual(
      logged.map((l) => [l.msg, l.version]),
      migrations.map((m) => ['applied store migration', m.version]),
      'only the first open applies (and logs) anything',
    );
  });

  test('processes racing to open one new file all succeed and apply each migration exactly once', async () => {
    const file = fresh();
    const fixture = fileURLToPath(new URL('./fixtures/open-store.ts', import.meta.url));
    const startAt = Date.now() + 3000; // after every child has loaded tsx and the store module
    const run = () =>
      new Promise<string>((resolve) => {
        let stderr = '';
        const child = spawn(process.execPath, ['--import', 'tsx', fixture, file, String(startAt)], {
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        child.stderr.on('data', (chunk) => (stderr += chunk));
        child.on('exit', (code) => resolve(code === 0 ? 'ok' : `exit ${code}: ${stderr}`));
      });
    assert.deepEqual(await Promise.all(Array.from({ length: 4 }, run)), ['ok', 'ok', 'ok', 'ok']);
    const counts = rows(file, 'SELECT version, COUNT(*) AS c FROM schema_migrations GROUP BY version ORDER BY version');
    assert.deepEqual(
      counts,
      migrations.map((m) => ({ version: m.version, c: 1 })),
    );
  });

  test('refuses to open when an applied migration was edited, naming it', async () => {
    const file = fresh();
    await (await openSqliteStore({ path: file })).close();
    const edited = migrations.map((m) => (m.version === 1 ? { ...m, sql: `${m.sql} -- edited` } : m));
    await assert.rejects(openSqliteStore({ path: file, migrations: edited }), storeError(/migration 1 \(meta\) was changed/));

    peek(file, (db) => db.prepare(`UPDATE schema_migrations SET checksum = 'tampered' WHERE version = ?`).run(latest));
    const name = migrations.at(-1)!.name.replace(/[()]/g, '\\$&');
    await assert.rejects(openSqliteStore({ path: file }), storeError(new RegExp(`migration ${latest} \\(${name}\\) was changed`)));
  });

  test('refuses a database whose schema is newer than this build', async () => {
    const file = fresh();
    const newer = [...migrations, { version: latest + 1, name: 'future', sql: 'CREATE TABLE future (id TEXT)' }];
    await (await openSqliteStore({ path: file, migrations: newer })).close();
    await assert.rejects(
      openSqliteStore({ path: file }),
      storeError(new RegExp(`schema version ${latest + 1}, newer than this turnpike knows \\(up to ${latest}\\)`)),
    );
  });

  test('a failing migration rolls back whole and is named; the ones before it stay', async () => {
    const file = fresh();
    const broken: Migration = { version: latest + 1, name: 'half', sql: 'CREATE TABLE half_done (id TEXT); CREATE TABLE oops (' };
    await assert.rejects(
      openSqliteStore({ path: file, migrations: [...migrations, broken] }),
      storeError(new RegExp(`migration ${latest + 1} \\(half\\) failed`)),
    );
    assert.deepEqual(rows(file, "SELECT name FROM sqlite_master WHERE name = 'half_done'"), []);
    const versions = rows(file, 'SELECT version FROM schema_migrations ORDER BY version');
    assert.deepEqual(
      versions,
      migrations.map((m) => ({ version: m.version })),
      'the migrations before it stay applied',
    );

    const fixed = { ...broken, sql: 'CREATE TABLE half_done (id TEXT)' };
    const store = await openSqliteStore({ path: file, migrations: [...migrations, fixed] });
    assert.equal((await store.health()).schemaVersion, latest + 1);
    await store.close();
  });

  test('refuses a migration list that is not strictly ascending', async () => {
    const shuffled = [migrations[1]!, migrations[0]!];
    await assert.rejects(openSqliteStore({ path: ':memory:', migrations: shuffled }), storeError(/out of order/));
  });

  test('a file that is not a SQLite database is a StoreError naming the file', async () => {
    const junk = path.join(dir, 'junk.db');
    writeFileSync(junk, 'not a database, just some text that is long enough to have a header'.repeat(10));
    const named = new RegExp(`cannot open SQLite database ${junk.replace(/[.\\]/g, '\\$&')}`);
    await assert.rejects(openSqliteStore({ path: junk }), storeError(named));
  });

  test('health() really writes the heartbeat and reports the schema version', async () => {
    const file = fresh();
    const store = await openSqliteStore({ path: file });
    const heartbeat = () => rows(file, "SELECT value, updated_at FROM meta WHERE key = 'heartbeat'");
    assert.deepEqual(heartbeat(), []);
    assert.deepEqual(await store.health(), { writable: true, schemaVersion: latest });
    const [first] = heartbeat();
    assert.ok(first);
    await store.health();
    assert.notDeepEqual(heartbeat(), [first], 'each check is a new write');
    await store.close();
  });

  test('after close(), health() rejects with a StoreError and close() is a no-op', async () => {
    const store = await openSqliteStore({ path: ':memory:' });
    await store.close();
    await assert.rejects(store.health(), storeError(/the store is closed/));
    await store.close();
  });
});

describe('openStore', () => {
  test('opens sqlite:<path> and sqlite::memory:', async () => {
    for (const url of [`sqlite:${fresh()}`, 'sqlite::memory:']) {
      const store = await openStore(url);
      assert.equal(store.kind, 'sqlite');
      assert.equal((await store.health()).schemaVersion, latest);
      await store.close();
    }
  });

  test('explains the URLs it cannot open', async () => {
    // A PostgreSQL that is not there: the message names it without its password and says what to check.
    const refused = await openStore('postgres://u:secret-pw@127.0.0.1:1/turnpike').then(
      () => assert.fail('opened'),
      (error: Error) => error,
    );
    assert.match(refused.message, /^cannot open PostgreSQL at postgres:\/\/\[redacted\]@127\.0\.0\.1:1\/turnpike: .*is the server running/);
    assert.doesNotMatch(refused.message, /secret-pw/);
    await assert.rejects(
      openStore('mysql://localhost/x'),
      storeError(/scheme "mysql:".*expected sqlite:<path>, sqlite::memory: or postgres:\/\//),
    );
    await assert.rejects(openStore('turnpike.db'), storeError(/"turnpike.db" \(no scheme\).*expected sqlite:<path>/));
    await assert.rejects(openStore('sqlite:'), storeError(/needs a path/));
  });
  test('upgrading binds rows written by slug to the server that held the slug then, and puts a rejected checkout up for review', async () => {
    const file = fresh();
    mkdirSync(path.dirname(file));
    peek(file, (db) => {
      migrateSqlite(
        db,
        migrations.filter((m) => m.version <= 7),
      );
      const server = (id: string, operator: string, at: number) =>
        `('${id}', '${operator}', 'x', 'X', 'https://mcp.example/mcp', 'none', 1, 'platform', '{}', 'tool-result', 1000, ${at}, ${at})`;
      db.exec(`
        INSERT INTO operators (id, email, name, key_hash, created_at, updated_at) VALUES ('op_b', 'b@example.com', 'b', 'hb', 1, 1);
        INSERT INTO servers (id, operator_id, slug, name, upstream_url, auth_mode, public, custody, plan, challenge, timeout_ms, created_at, updated_at)
          VALUES ${server('srv_b', 'op_b', 5000)};
        INSERT INTO charges (id, server, operator_id, rail, caller, tool, amount, operator_share, platform_share, custody, ref, state, created_at) VALUES
          ('ch_a', 'x', NULL, 'x402', '0xa', 't', 10, 10, 0, 'platform', 'r1', 'earned', 2000),
          ('ch_b', 'x', 'op_b', 'x402', '0xa', 't', 20, 20, 0, 'platform', 'r2', 'earned', 6000);
        INSERT INTO usage_counts (server, caller, month, calls) VALUES ('x', '0xa', 202501, 3), ('gone', '0xa', 202501, 1);
        INSERT INTO api_keys (id, hash, name, created_at, updated_at) VALUES ('key_1', 'h1', 'k', 1, 1);
        INSERT INTO checkout_sessions (session_id, key_id, package, credits, amount_total, currency, state, created_at, updated_at) VALUES
          ('cs_1', 'key_1', '10', 10000000, 1000, 'usd', 'rejected', 1, 1), ('cs_2', 'key_1', '10', 10000000, 1000, 'usd', 'credited', 1, 1);
      `);
    });
    await (await openSqliteStore({ path: file })).close();
    assert.deepEqual(
      rows(file, 'SELECT id, server_id FROM charges ORDER BY id'),
      [
        { id: 'ch_a', server_id: 'x' },
        { id: 'ch_b', server_id: 'srv_b' },
      ],
      'a charge made before the server at the slug existed is not that server’s',
    );
    assert.deepEqual(rows(file, 'SELECT server_id FROM usage_counts ORDER BY server_id'), [{ server_id: 'gone' }, { server_id: 'srv_b' }]);
    assert.deepEqual(rows(file, 'SELECT session_id, state, review_reason FROM checkout_sessions ORDER BY session_id'), [
      { session_id: 'cs_1', state: 'review', review_reason: 'amount_mismatch' },
      { session_id: 'cs_2', state: 'credited', review_reason: null },
    ]);
  });
  test('upgrading to delivered counts takes the calls counted before as delivered; a new row starts at 0 delivered', async () => {
    const file = fresh();
    mkdirSync(path.dirname(file));
    peek(file, (db) => {
      migrateSqlite(
        db,
        migrations.filter((m) => m.version <= 23),
      );
      db.exec(`INSERT INTO usage_counts (server_id, caller, month, calls) VALUES ('srv', '0xa', 202501, 7), ('srv', '0xb', 202501, 0)`);
    });
    const store = await openSqliteStore({ path: file });
    try {
      assert.deepEqual(rows(file, 'SELECT caller, calls, delivered FROM usage_counts ORDER BY caller'), [
        { caller: '0xa', calls: 7, delivered: 7 },
        { caller: '0xb', calls: 0, delivered: 0 },
      ]);
      assert.deepEqual(await store.operators.countCall('srv', '0xa', 202501), { calls: 8n, delivered: 7n });
      assert.deepEqual(await store.operators.countCall('srv', '0xc', 202501), { calls: 1n, delivered: 0n });
    } finally {
      await store.close();
    }
  });
});
