import { randomUUID } from 'node:crypto';
import pg from 'pg';
import type { Logger } from 'pino';
import { type Migration, migrations as shipped } from './migrations.js';
import { createPool, postgresRunner } from './engine/postgres.js';
import { metaStore } from './meta.js';
import { creditStore } from './credits/ops.js';
import { contested } from './credits/statements.js';
import { eventStore } from './events/ops.js';
import { journalStore } from './journal/ops.js';
import { migratePostgres } from './postgres-migrate.js';
import { operatorStore } from './operators/ops.js';
import { postpaidStore } from './postpaid/ops.js';
import { type Lease, type Store, StoreError } from './store.js';
import { shownUrl } from '../log/shown-url.js';

export type PostgresStoreOptions = {
  /** `postgres://user:password@host:port/database` */
  url: string;
  /** A schema of its own (created if missing), e.g. one per test run; default the user's search_path. */
  schema?: string;
  logger?: Logger;
  /** Only tests pass their own list. */
  migrations?: readonly Migration[];
  /** Connections in the pool. */
  max?: number;
};

export type PostgresStore = Store & { readonly kind: 'postgres'; readonly pool: pg.Pool };

/** How often the lease session is asked `SELECT 1`, and how long it has to answer. */
const LEASE_HEARTBEAT_MS = 5_000;

/**
 * The connection that holds this instance's leases as session advisory locks: the server drops
 * them when the connection ends, however the process died. Losing it while running would let
 * another instance take this one's relayer keys, so the process is told to stop (SIGTERM).
 * The session is never idle: a heartbeat every 5 s (with TCP keepalive) keeps the server's
 * `idle_session_timeout` and idle-connection reapers (NAT, load balancers, poolers) off it, and
 * notices a connection dropped without a word, which nothing else sent on it would ever do: the
 * server frees the locks of a session it reaped while this instance went on using them.
 *
 * @example const leases = await leaseSession(options, instanceId); await leases.take('relayer:0xabc');
 */
async function leaseSession(options: PostgresStoreOptions, instanceId: string) {
  const client = new pg.Client({
    connectionString: options.url,
    // Named, so an operator (or a test) finds it in pg_stat_activity.
    application_name: 'turnpike leases',
    keepAlive: true,
    query_timeout: LEASE_HEARTBEAT_MS,
    ...(options.schema ? { options: `-c search_path=${options.schema}` } : {}),
  });
  await client.connect();
  let ending = false;
  let alive = true;
  const lost = (error?: Error) => {
    if (ending || !alive) return;
    // Before anything else: another instance may take these locks now, so nothing leased is used again.
    alive = false;
    options.logger?.fatal({ err: error }, 'lost the PostgreSQL session holding this instance’s leases; stopping');
    process.kill(process.pid, 'SIGTERM');
  };
  client.on('error', lost);
  client.on('end', () => lost());
  const heartbeat = setInterval(() => {
    client.query('SELECT 1').catch((error: Error) => lost(error));
  }, LEASE_HEARTBEAT_MS).unref();
  // Advisory locks are database-wide, so with a schema of its own (`?schema=`, every connection
  // pinned to it) a lease's lock key names the schema too: instances on other schemas of the
  // database (other tenants, other environments) never block this one's work. Without one, the key
  // is the name alone, exclusive, as earlier versions took it: a search_path left to the role or
  // the URL can come to name another schema while the instance runs (one created ahead of its
  // own), and two instances would then share tables under two keys.
  const { schema } = options;
  const keys = (name: string) => [name, schema === undefined ? name : JSON.stringify([schema, name])];
  // A session advisory lock is re-entrant: taken twice on one session, it is given twice. A lease is
  // not: one holder at a time, this instance included (two overlapping recovery rounds of one
  // instance must not both work a dead instance's entries), so what this instance holds is kept here.
  const held = new Set<string>();
  const take = async (name: string): Promise<Lease | undefined> => {
    if (held.has(name)) return undefined;
    held.add(name);
    let ok = false;
    try {
      // The schema's key, exclusive; and the name's alone, shared: instances with a schema share that
      // one, but one without (or of an earlier version) holding it exclusively still excludes this one
      // from its lease, and the other way round. Without a schema, the name's alone, exclusive.
      const { rows } = await client.query<{ shared: boolean; own: boolean }>(
        'SELECT CASE WHEN $3 THEN pg_try_advisory_lock_shared(hashtextextended($1, 0)) ELSE false END AS shared, ' +
          'pg_try_advisory_lock(hashtextextended($2, 0)) AS own',
        [...keys(name), schema !== undefined],
      );
      const { shared, own } = rows[0]!;
      ok = (shared || schema === undefined) && own;
      if (!ok && (shared || own)) await unlock(name, { shared, own });
    } finally {
      if (!ok) held.delete(name);
    }
    if (!ok) return undefined;
    let released = false;
    return {
      async release() {
        if (released) return;
        released = true;
        try {
          await unlock(name, { shared: schema !== undefined, own: true });
        } finally {
          held.delete(name);
        }
      },
    };
  };
  const unlock = (name: string, taken: { shared: boolean; own: boolean }) =>
    client.query(
      'SELECT CASE WHEN $3 THEN pg_advisory_unlock_shared(hashtextextended($1, 0)) END, CASE WHEN $4 THEN pg_advisory_unlock(hashtextextended($2, 0)) END',
      [...keys(name), taken.shared, taken.own],
    );
  if (!(await take(`instance:${instanceId}`))) throw new StoreError('could not take this instance’s own lease');
  return {
    take: async (name: string) => (alive ? take(name) : undefined),
    /** False once the session is lost: the server has freed every lock this instance held. */
    holds: () => alive,
    async end() {
      ending = true;
      clearInterval(heartbeat);
      await client.end();
    },
  };
}

/**
 * Opens the PostgreSQL store and brings its schema up to date; several turnpike instances may
 * share it. Money columns are BIGINT and read as bigint; every check-then-write is one guarded
 * statement or a transaction holding a row lock, so instances cannot interleave inside it.
 *
 * @example
 * const store = await openPostgresStore({ url: 'postgres://turnpike@db:5432/turnpike', logger });
 */
export async function openPostgresStore(options: PostgresStoreOptions): Promise<PostgresStore> {
  if (options.schema !== undefined && !/^[a-z_][a-z0-9_]{0,62}$/.test(options.schema)) {
    throw new StoreError(`schema "${options.schema}": expected lower-case letters, digits and underscores`);
  }
  const pool = createPool(options.url, {
    ...(options.schema ? { schema: options.schema } : {}),
    ...(options.max ? { max: options.max } : {}),
  });
  // An idle connection the server dropped must not take the process down.
  pool.on('error', (error) => options.logger?.warn({ err: error }, 'PostgreSQL connection lost'));
  try {
    await migratePostgres(pool, options.migrations ?? shipped, options.logger, options.schema);
  } catch (error) {
    await pool.end().catch(() => undefined);
    if (error instanceof StoreError) throw error;
    throw new StoreError(
      `cannot open PostgreSQL at ${shownUrl(options.url)}: ${(error as Error).message}; is the server running and the URL right?`,
      { cause: error },
    );
  }

  const instanceId = randomUUID();
  const leases = await leaseSession(options, instanceId);
  const runner = postgresRunner(pool);
  const meta = metaStore(runner);
  let closed = false;
  return {
    kind: 'postgres',
    pool,
    instanceId,
    lease: leases.take,
    holdsLeases: leases.holds,
    journal: journalStore(runner, instanceId),
    credits: creditStore(postgresRunner(pool, { rerunOn: contested })),
    operators: operatorStore(runner),
    postpaid: postpaidStore(runner),
    events: eventStore(runner),
    instanceSecret: meta.instanceSecret,
    revokeSession: meta.revokeSession,
    sessionRevoked: meta.sessionRevoked,
    async health() {
      if (closed) throw new StoreError('the store is closed');
      try {
        return { writable: true, schemaVersion: await meta.heartbeat() };
      } catch (error) {
        throw new StoreError(`the store cannot take a write: ${(error as Error).message}`, { cause: error });
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      await leases.end();
      await pool.end();
    },
  };
}
