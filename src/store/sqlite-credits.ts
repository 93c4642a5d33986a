import type Database from 'better-sqlite3';
import type { CreditStore } from './credits.js';
import { type Op, type Step, ledgerStore } from './credits-ledger.js';
import { type CreditsSql, creditsSql } from './credits-rows.js';
import { groupCommit } from './group-commit.js';

/**
 * The credits ledger on SQLite. Every change is one savepoint inside a group-committed `BEGIN
 * IMMEDIATE` transaction: the check (status, limits, balance, budget) and the write cannot
 * interleave with another writer, in this process or another, so a `lock` step is a plain read.
 */
export function sqliteCredits(db: Database.Database): CreditStore {
  const statements = Object.fromEntries(
    Object.entries(creditsSql).map(([name, sql]) => [name, db.prepare<Record<string, unknown>, unknown>(sql).safeIntegers(true)]),
  ) as Record<CreditsSql, Database.Statement<Record<string, unknown>, unknown>>;
  const perform = (step: Step) => {
    const statement = statements[step.sql];
    if (step.kind === 'run') return statement.run(step.params).changes;
    return step.kind === 'all' ? statement.all(step.params) : statement.get(step.params);
  };
  const exec = <T>(op: Op<T>): T => {
    let next = op.next();
    while (!next.done) next = op.next(perform(next.value));
    return next.value;
  };
  const { write, decide } = groupCommit(db);
  return ledgerStore({
    read: async (op) => exec(op()),
    write: (op) => write(() => exec(op())),
    decide: (op) => decide(() => exec(op())),
  });
}
