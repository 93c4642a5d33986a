import pg from 'pg';
import { StoreError } from '../store.js';
import type { Command, Op, Params, Query, Runner, Step } from './statement.js';

/** A connection or the pool: anything a query can run on. */
export type Queryable = pg.Pool | pg.PoolClient;

const valuesOf = (names: readonly string[], params: Params) =>
  names.map((name) => {
    if (!(name in params)) throw new StoreError(`SQL parameter @${name} is missing`);
    const value = params[name];
    return typeof value === 'bigint' ? value.toString() : value;
  });

async function rows(db: Queryable, text: string, names: readonly string[], params: Params): Promise<unknown[]> {
  return (await db.query(text, valuesOf(names, params))).rows;
}
export async function all<P extends Params, R>(db: Queryable, statement: Query<P, R>, params: NoInfer<P>): Promise<R[]> {
  return (await rows(db, statement.postgres.text, statement.postgres.names, params)) as R[];
}
export async function one<P extends Params, R>(db: Queryable, statement: Query<P, R>, params: NoInfer<P>): Promise<R | undefined> {
  return (await all(db, statement, params))[0];
}
/** Runs a statement; resolves to the number of rows it changed. */
export async function run<P extends Params>(db: Queryable, statement: Command<P>, params: NoInfer<P>): Promise<number> {
  return (await db.query(statement.postgres.text, valuesOf(statement.postgres.names, params))).rowCount ?? 0;
}

// int8 (BIGINT, COUNT, SUM of BIGINT is numeric) as bigint: money never passes through a float.
const BIGINT_OIDS = new Set([20, 1700]);
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    BIGINT_OIDS.has(oid)
      ? (value: string) => BigInt(value)
      : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

/** A pool whose connections see `schema` first (each test run makes its own) and read int8 as bigint. */
export function createPool(url: string, options: { schema?: string; max?: number } = {}): pg.Pool {
  return new pg.Pool({
    connectionString: url,
    max: options.max ?? 10,
    types,
    ...(options.schema ? { options: `-c search_path=${options.schema}` } : {}),
  });
}

/** SQLSTATEs after which a transaction is safe to run again: serialization failure, deadlock. */
const RETRYABLE = new Set(['40001', '40P01']);

/**
 * Runs `fn` in one transaction on one connection of the pool: committed when it returns, rolled
 * back when it throws, and run again (a few times) when PostgreSQL aborts it for a serialization
 * failure or a deadlock. `fn` may await; it must only touch the database through `db`.
 *
 * @example const balance = await transaction(pool, async (db) => { await run(db, lockKey, { id }); … });
 */
export async function transaction<T>(pool: pg.Pool, fn: (db: pg.PoolClient) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      const result = await fn(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      if (attempt < 5 && RETRYABLE.has((error as { code?: string }).code ?? '')) continue;
      throw error;
    } finally {
      client.release();
    }
  }
}

/** Whether an error is PostgreSQL's unique_violation (23505), of one of `constraints` if given. */
export function isUniqueViolation(error: unknown, constraints?: readonly string[]): boolean {
  const { code, constraint } = error as { code?: string; constraint?: string };
  return code === '23505' && (!constraints || constraints.includes(constraint ?? ''));
}

function perform(db: Queryable, step: Step): Promise<unknown> {
  if (step.kind === 'run') return run(db, step.statement, step.params);
  const { postgres, locking } = step.statement;
  // `lock` takes only a lockable query (typed so): its locking text is there.
  const found = rows(db, step.kind === 'lock' ? locking! : postgres.text, postgres.names, step.params);
  return step.kind === 'all' ? found : found.then((r) => r[0]);
}

async function exec<T>(db: Queryable, op: Op<T>): Promise<T> {
  let next = op.next();
  while (!next.done) next = op.next(await perform(db, next.value));
  return next.value;
}

/**
 * Runs operations on a PostgreSQL pool (READ COMMITTED): a write is one transaction, whose `lock`
 * steps lock the rows their checks are about, so writers of one row from any number of instances
 * queue there. A commit is decided and durable at once. `rerunOn`: unique constraints two writers
 * of different rows can race for (an idempotency key); the loser runs again and finds the
 * winner's row, as it would have on SQLite, where writers never race.
 */
export function postgresRunner(pool: pg.Pool, options: { rerunOn?: readonly string[] } = {}): Runner {
  const attempt = <T>(op: () => Op<T>) => transaction(pool, (db) => exec(db, op()));
  const write = <T>(op: () => Op<T>) =>
    attempt(op).catch((error: unknown) => {
      if (options.rerunOn && isUniqueViolation(error, options.rerunOn)) return attempt(op);
      throw error;
    });
  return {
    read: (op) => exec(pool, op()),
    write,
    decide: async (op) => ({ value: await write(op), durable: Promise.resolve() }),
    // Each statement is its own transaction, committed (and durable) when it returns.
    unsynced: (op) => exec(pool, op()),
  };
}
