import type pg from 'pg';
import type { CreditStore } from './credits.js';
import { type Op, type Step, ledgerStore } from './credits-ledger.js';
import { type CreditsSql, type Lockable, creditsSql, lockable } from './credits-rows.js';
import { type Queryable, type Statement, all, isUniqueViolation, named, one, run, transaction } from './pg.js';

const statements = Object.fromEntries(Object.entries(creditsSql).map(([name, sql]) => [name, named(sql)])) as Record<CreditsSql, Statement>;
const locked = Object.fromEntries(lockable.map((name) => [name, named(`${creditsSql[name]} FOR NO KEY UPDATE`)])) as Record<Lockable, Statement>;

function perform(db: Queryable, step: Step): Promise<unknown> {
  if (step.kind === 'lock') return one(db, locked[step.sql], step.params);
  const statement = statements[step.sql];
  if (step.kind === 'run') return run(db, statement, step.params);
  return step.kind === 'all' ? all(db, statement, step.params) : one(db, statement, step.params);
}

async function exec<T>(db: Queryable, op: Op<T>): Promise<T> {
  let next = op.next();
  while (!next.done) next = op.next(await perform(db, next.value));
  return next.value;
}

/** A concurrent writer committed an entry under the same idempotency key first. */
const isEntryTaken = (error: unknown) => isUniqueViolation(error) && (error as { constraint?: string }).constraint === 'ledger_idempotency_key_key';

/**
 * The credits ledger on PostgreSQL (READ COMMITTED), the same operations as on SQLite. Each
 * change is one transaction that first locks the row its check is about (the key, the checkout
 * session), so two instances' debits of one key queue on that row and each sees the other's
 * spend. Two writers of one idempotency key on different rows are ordered by the ledger's
 * unique index instead: the loser runs again and finds the winner's entry, as on SQLite.
 */
export function postgresCredits(pool: pg.Pool): CreditStore {
  const attempt = <T>(op: () => Op<T>) => transaction(pool, (db) => exec(db, op()));
  const write = <T>(op: () => Op<T>) =>
    attempt(op).catch((error: unknown) => {
      if (isEntryTaken(error)) return attempt(op);
      throw error;
    });
  return ledgerStore({
    read: (op) => exec(pool, op()),
    write,
    // A PostgreSQL commit is decided and durable at once.
    decide: async (op) => ({ value: await write(op), durable: Promise.resolve() }),
  });
}
