import pg from 'pg';
import { StoreError } from './store.js';

/**
 * A statement written with `@name` parameters (as the SQLite code is), compiled once to
 * PostgreSQL's `$1…$n`. The same SQL text reads the same in both backends.
 *
 * @example const byId = named('SELECT * FROM api_keys WHERE id = @id'); await one(db, byId, { id });
 */
export function named(text: string): { text: string; names: string[] } {
  const names: string[] = [];
  const compiled = text.replace(/(?<!:)@([A-Za-z_]\w*)/g, (_, name: string) => {
    const at = names.indexOf(name);
    if (at >= 0) return `$${at + 1}`;
    names.push(name);
    return `$${names.length}`;
  });
  return { text: compiled, names };
}
export type Statement = ReturnType<typeof named>;

/** A connection or the pool: anything a query can run on. */
export type Queryable = pg.Pool | pg.PoolClient;

const valuesOf = (statement: Statement, params: Record<string, unknown>) =>
  statement.names.map((name) => {
    if (!(name in params)) throw new StoreError(`SQL parameter @${name} is missing`);
    const value = params[name];
    return typeof value === 'bigint' ? value.toString() : value;
  });

export async function all<Row>(db: Queryable, statement: Statement, params: Record<string, unknown> = {}): Promise<Row[]> {
  return (await db.query(statement.text, valuesOf(statement, params))).rows as Row[];
}
export async function one<Row>(db: Queryable, statement: Statement, params: Record<string, unknown> = {}): Promise<Row | undefined> {
  return (await all<Row>(db, statement, params))[0];
}
/** Runs a statement; resolves to the number of rows it changed. */
export async function run(db: Queryable, statement: Statement, params: Record<string, unknown> = {}): Promise<number> {
  return (await db.query(statement.text, valuesOf(statement, params))).rowCount ?? 0;
}

// int8 (BIGINT, COUNT, SUM of BIGINT is numeric) as bigint: money never passes through a float.
const BIGINT_OIDS = new Set([20, 1700]);
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    BIGINT_OIDS.has(oid) ? (value: string) => BigInt(value) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
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

/** Whether an error is PostgreSQL's unique_violation (23505). */
export const isUniqueViolation = (error: unknown) => (error as { code?: string }).code === '23505';
