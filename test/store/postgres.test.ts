import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import pg from 'pg';
import { migrations } from '../../src/store/migrations.js';
import { type PostgresStore, openPostgresStore } from '../../src/store/postgres.js';
import { POSTGRES_URL, backends, freshSchema } from '../helpers/stores.js';

const postgres = backends.find((b) => b.name === 'postgres')!;

/** Opens `n` stores on `schema` at once, as instances started together would; every one must open. */
async function startTogether(schema: string, n: number) {
  const opened = await Promise.allSettled(Array.from({ length: n }, () => openPostgresStore({ url: POSTGRES_URL, schema, max: 2 })));
  const failed = opened.flatMap((o) => (o.status === 'rejected' ? [(o.reason as Error).message] : []));
  await Promise.all(opened.map((o) => (o.status === 'fulfilled' ? o.value.close() : undefined)));
  return failed;
}

describe('several instances starting on one PostgreSQL', { skip: postgres.skip }, () => {
  test('instances starting at once on a schema that does not exist yet all start, and each migration is applied once', async () => {
    for (let round = 0; round < 3; round++) {
      const schema = freshSchema();
      assert.deepEqual(await startTogether(schema, 4), [], 'no instance fails to start');
      const store = await openPostgresStore({ url: POSTGRES_URL, schema, max: 1 });
      try {
        const { rows } = await store.pool.query<{ version: number; n: string }>(
          'SELECT version, COUNT(*) AS n FROM schema_migrations GROUP BY version ORDER BY version',
        );
        assert.deepEqual(
          rows.map((r) => [r.version, Number(r.n)]),
          migrations.map((m) => [m.version, 1]),
        );
      } finally {
        await store.close();
      }
    }
  });

  test('upgrading to delivered counts takes the calls counted before as delivered', async () => {
    const schema = freshSchema();
    const old = await openPostgresStore({ url: POSTGRES_URL, schema, migrations: migrations.filter((m) => m.version <= 23), max: 1 });
    await old.pool.query(`INSERT INTO usage_counts (server_id, caller, month, calls) VALUES ('srv', '0xa', 202501, 7)`);
    await old.close();
    const store = await openPostgresStore({ url: POSTGRES_URL, schema, max: 1 });
    try {
      assert.deepEqual(await store.operators.countCall('srv', '0xa', 202501), { calls: 8n, delivered: 7n });
      assert.deepEqual(await store.operators.countCall('srv', '0xc', 202501), { calls: 1n, delivered: 0n });
    } finally {
      await store.close();
    }
  });

  test('instances starting at once on an older schema all start and bring it up to date once', async () => {
    const schema = freshSchema();
    const old = await openPostgresStore({ url: POSTGRES_URL, schema, migrations: migrations.slice(0, 5), max: 1 });
    await old.close();
    assert.deepEqual(await startTogether(schema, 4), []);
    const store = await openPostgresStore({ url: POSTGRES_URL, schema, max: 1 });
    try {
      const { rows } = await store.pool.query<{ n: string }>('SELECT COUNT(DISTINCT version) AS n FROM schema_migrations');
      assert.equal(Number(rows[0]!.n), migrations.length);
      assert.equal((await store.health()).schemaVersion, migrations.at(-1)!.version);
    } finally {
      await store.close();
    }
  });

  test('an instance’s lease session is never idle: a server that ends idle sessions (idle_session_timeout) does not stop it', async () => {
    const database = new URL(POSTGRES_URL).pathname.slice(1);
    const admin = new pg.Client({ connectionString: POSTGRES_URL });
    await admin.connect();
    let stopped = 0;
    const onStop = () => void stopped++;
    process.on('SIGTERM', onStop);
    try {
      await admin.query(`ALTER DATABASE ${database} SET idle_session_timeout = '7s'`);
      const store = await openPostgresStore({ url: POSTGRES_URL, schema: freshSchema(), max: 1 });
      try {
        await sleep(10_000);
        assert.equal(stopped, 0, 'the lease session was ended as idle, and the instance told to stop');
        assert.ok(await store.lease('relayer:0xabc'), 'its session still takes leases');
      } finally {
        await store.close();
      }
    } finally {
      await admin.query(`ALTER DATABASE ${database} RESET idle_session_timeout`);
      await admin.end();
      process.off('SIGTERM', onStop);
    }
  });
});

describe('leases of instances on one PostgreSQL database', { skip: postgres.skip }, () => {
  test('instances on two schemas of one database each take the same lease; on one schema, only one does', async () => {
    const [schemaA, schemaB] = [freshSchema(), freshSchema()];
    const stores = await Promise.all([schemaA, schemaA, schemaB].map((schema) => openPostgresStore({ url: POSTGRES_URL, schema, max: 1 })));
    try {
      const [a1, a2, b] = stores as [PostgresStore, PostgresStore, PostgresStore];
      const held = await a1.lease('relayer:0xabc');
      assert.ok(held, 'the first instance on schema A takes it');
      assert.equal(await a2.lease('relayer:0xabc'), undefined, 'a second instance on schema A is refused');
      const other = await b.lease('relayer:0xabc');
      assert.ok(other, 'an instance on schema B is not blocked by schema A’s lease');
      await held.release();
      assert.ok(await a2.lease('relayer:0xabc'), 'released on schema A, it is free for the next instance there');
      assert.equal(await b.lease('relayer:0xabc'), undefined, 'schema B’s own holder still has it');
      await other.release();
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  test('two instances without ?schema= whose search_path comes to name a schema created after the first started (both then on its tables) do not both hold one lease', async () => {
    const [late, base] = [freshSchema(), freshSchema()];
    const admin = new pg.Client({ connectionString: POSTGRES_URL });
    await admin.connect();
    await admin.query(`CREATE SCHEMA ${base}`);
    const url = `${POSTGRES_URL}?options=${encodeURIComponent(`-c search_path=${late},${base}`)}`;
    const first = await openPostgresStore({ url, max: 1 });
    const stores = [first];
    try {
      const held = await first.lease('relayer:0xabc');
      assert.ok(held, 'the first instance (its tables in the base schema) takes it');
      await admin.query(`CREATE SCHEMA ${late}`);
      const second = await openPostgresStore({ url, max: 1 });
      stores.push(second);
      const resolved = await first.pool.query<{ schema: string }>(
        "SELECT n.nspname AS schema FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = 'schema_migrations'::regclass",
      );
      assert.equal(resolved.rows[0]!.schema, late, 'the first instance now works on the second one’s tables');
      assert.equal(await second.lease('relayer:0xabc'), undefined, 'the second instance is refused the lease the first holds');
      await held.release();
    } finally {
      await Promise.all(stores.map((s) => s.close()));
      await admin.end();
    }
  });

  test('an instance with ?schema= and one reaching the same schema by its search_path exclude each other from one lease', async () => {
    const schema = freshSchema();
    const pinned = await openPostgresStore({ url: POSTGRES_URL, schema, max: 1 });
    const byPath = await openPostgresStore({ url: `${POSTGRES_URL}?options=${encodeURIComponent(`-c search_path=${schema}`)}`, max: 1 });
    try {
      const held = await pinned.lease('relayer:0xabc');
      assert.ok(held);
      assert.equal(await byPath.lease('relayer:0xabc'), undefined);
      await held.release();
      const other = await byPath.lease('relayer:0xabc');
      assert.ok(other, 'released, the other takes it');
      assert.equal(await pinned.lease('relayer:0xabc'), undefined);
      await other.release();
    } finally {
      await Promise.all([pinned.close(), byPath.close()]);
    }
  });

  test('an instance of an earlier version (its lock on the lease name alone) and this one exclude each other during an upgrade', async () => {
    const schema = freshSchema();
    const store = await openPostgresStore({ url: POSTGRES_URL, schema, max: 1 });
    const earlier = new pg.Client({ connectionString: POSTGRES_URL });
    await earlier.connect();
    const take = async (name: string) =>
      (await earlier.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS ok', [name])).rows[0]!.ok;
    try {
      assert.equal(await take('relayer:0xabc'), true);
      assert.equal(await store.lease('relayer:0xabc'), undefined, 'the earlier instance holds it');
      const lease = await store.lease('relayer:0xdef');
      assert.ok(lease);
      assert.equal(await take('relayer:0xdef'), false, 'this instance holds it');
      await lease.release();
      assert.equal(await take('relayer:0xdef'), true, 'released, it is free for the earlier instance');
    } finally {
      await earlier.end();
      await store.close();
    }
  });
});
