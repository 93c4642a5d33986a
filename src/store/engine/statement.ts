/**
 * Statements and operations, written once for both backends.
 *
 * A statement is SQL with `@name` parameters, its parameter type and its row type; it carries its
 * text for each dialect (SQLite reads `@name`, PostgreSQL gets `$1…$n`, compiled here once). An
 * operation is a generator that yields the steps it needs (`get`, `all`, `run`, `lock`) and is
 * handed back their results: SQLite runs it synchronously inside its group commit (nothing may be
 * awaited while it holds the write lock), PostgreSQL awaits each step inside a transaction. The
 * checks, their order and the writes are therefore the same on both.
 *
 * @example
 * const keyById = query<{ id: string }, KeyRow>('SELECT * FROM api_keys WHERE id = @id', { lockable: true });
 * function* status(id: string): Op<string | undefined> {
 *   return (yield* lock(keyById, { id }))?.status;
 * }
 */

/** A parameter's value: BIGINT as bigint, a flag as 0/1, NULL as null. */
export type SqlValue = string | number | bigint | null;
export type Params = Record<string, SqlValue>;

declare const types: unique symbol;
type Typed<P, R> = {
  /** SQLite's text: `@name` parameters. */
  readonly sqlite: string;
  /** PostgreSQL's text: `$n` parameters, `names[n - 1]` being the n-th. */
  readonly postgres: { readonly text: string; readonly names: readonly string[] };
  /** Types only: what the statement takes and gives back. */
  readonly [types]?: { params: P; row: R };
};
/** A statement that answers rows (a SELECT, or a write with RETURNING). */
export type Query<P extends Params, R> = Typed<P, R> & { readonly kind: 'query'; readonly locking?: string };
/** A query of the row a check is about: PostgreSQL can read it locked (`FOR NO KEY UPDATE`). */
export type LockableQuery<P extends Params, R> = Query<P, R> & { readonly locking: string };
/** A statement that answers the number of rows it changed. */
export type Command<P extends Params> = Typed<P, never> & { readonly kind: 'command' };

/** `@name` parameters to PostgreSQL's `$n`, one number per name. */
function compile(text: string) {
  const names: string[] = [];
  const compiled = text.replace(/(?<!:)@([A-Za-z_]\w*)/g, (_, name: string) => {
    const at = names.indexOf(name);
    if (at >= 0) return `$${at + 1}`;
    names.push(name);
    return `$${names.length}`;
  });
  return { text: compiled, names };
}

/**
 * A statement answering rows `R`. `lockable`: a plain SELECT of the row a check is about, which an
 * operation may `lock`; NO KEY UPDATE queues the writers of that row as FOR UPDATE would, without
 * holding up the inserts elsewhere that only take a KEY SHARE lock on it (a foreign key).
 */
export function query<P extends Params, R>(sql: string, options: { lockable: true }): LockableQuery<P, R>;
export function query<P extends Params, R>(sql: string): Query<P, R>;
export function query<P extends Params, R>(sql: string, options?: { lockable: true }): Query<P, R> {
  const postgres = compile(sql);
  return { kind: 'query', sqlite: sql, postgres, ...(options?.lockable ? { locking: `${postgres.text} FOR NO KEY UPDATE` } : {}) };
}
/** A statement answering how many rows it changed. */
export function command<P extends Params>(sql: string): Command<P> {
  return { kind: 'command', sqlite: sql, postgres: compile(sql) };
}

/** What an operation asks its backend for; the backend hands back the step's result. */
export type Step =
  /** `get`: the first row or undefined; `all`: the rows; `lock`: a `get` whose row stays locked until the transaction ends. */
  | { kind: 'get' | 'all' | 'lock'; statement: Query<Params, unknown>; params: Params }
  /** The number of rows changed. */
  | { kind: 'run'; statement: Command<Params>; params: Params };
export type Op<T> = Generator<Step, T, unknown>;

// The casts below are the one place a step's result meets its statement's row type.
export function* get<P extends Params, R>(statement: Query<P, R>, params: NoInfer<P>): Op<R | undefined> {
  return (yield { kind: 'get', statement: statement as Query<Params, unknown>, params }) as R | undefined;
}
export function* all<P extends Params, R>(statement: Query<P, R>, params: NoInfer<P>): Op<R[]> {
  return (yield { kind: 'all', statement: statement as Query<Params, unknown>, params }) as R[];
}
/** Resolves to the number of rows the statement changed. */
export function* run<P extends Params>(statement: Command<P>, params: NoInfer<P>): Op<number> {
  return (yield { kind: 'run', statement: statement as Command<Params>, params }) as number;
}
/** Reads the row a check is about, locked until the transaction ends (on SQLite the transaction already holds the write lock). */
export function* lock<P extends Params, R>(statement: LockableQuery<P, R>, params: NoInfer<P>): Op<R | undefined> {
  return (yield { kind: 'lock', statement: statement as Query<Params, unknown>, params }) as R | undefined;
}

/**
 * How a backend runs operations. `read`: as it is, no transaction. `write`: in a transaction of
 * its own, settled once durable. `decide`: likewise, settled once committed, with `durable` to
 * await before anything that depends on it is answered. `unsynced`: each statement committed on
 * its own, durable with the next `write` or `decide` (SQLite) or at once (PostgreSQL); only for a
 * write nothing is answered on alone (an x402 hold, a kept result).
 */
export type Runner = {
  read<T>(op: () => Op<T>): Promise<T>;
  write<T>(op: () => Op<T>): Promise<T>;
  decide<T>(op: () => Op<T>): Promise<{ value: T; durable: Promise<void> }>;
  unsynced<T>(op: () => Op<T>): Promise<T>;
};
