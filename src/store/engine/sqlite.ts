import type Database from 'better-sqlite3';
import { groupCommit } from './group-commit.js';
import type { Op, Runner, Step } from './statement.js';

/**
 * Runs operations on a SQLite connection, synchronously: each statement prepared once (BIGINT read
 * as bigint), writes in the connection's group commit (one `BEGIN IMMEDIATE` transaction per turn
 * of the event loop, a savepoint per operation), which already holds the database's write lock:
 * a `lock` step is a plain read.
 */
export function sqliteRunner(db: Database.Database): Runner {
  const prepared = new Map<Step['statement'], Database.Statement<Record<string, unknown>, unknown>>();
  const statementOf = (step: Step) => {
    let statement = prepared.get(step.statement);
    if (!statement) {
      statement = db.prepare<Record<string, unknown>, unknown>(step.statement.sqlite).safeIntegers(true);
      prepared.set(step.statement, statement);
    }
    return statement;
  };
  const perform = (step: Step) => {
    const statement = statementOf(step);
    if (step.kind === 'run') return statement.run(step.params).changes;
    return step.kind === 'all' ? statement.all(step.params) : statement.get(step.params);
  };
  const exec = <T>(op: Op<T>): T => {
    let next = op.next();
    while (!next.done) next = op.next(perform(next.value));
    return next.value;
  };
  const group = groupCommit(db);
  return {
    read: async (op) => exec(op()),
    write: (op) => group.write(() => exec(op())),
    decide: (op) => group.decide(() => exec(op())),
    unsynced: async (op) => group.unsynced(() => exec(op())),
  };
}
