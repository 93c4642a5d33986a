import type Database from 'better-sqlite3';
import { groupCommit } from './group-commit.js';
import type { OperatorStore } from './operators.js';
import { type OperatorOp, operatorOps } from './operators-ops.js';
import { type OperatorsSql, operatorsSql } from './operators-rows.js';

/**
 * Operators, their servers, call counts, charges, withdrawals and the audit log on SQLite. Writes
 * share the connection's group commit with the ledger; a check-then-write (a withdrawal against
 * the available balance) runs inside one of its `BEGIN IMMEDIATE` transactions, which already
 * holds the database's write lock: a `lock` step is a plain read.
 */
export function sqliteOperators(db: Database.Database): OperatorStore {
  const prepared = new Map<OperatorsSql, Database.Statement<Record<string, unknown>, unknown>>();
  for (const [name, sql] of Object.entries(operatorsSql)) prepared.set(name as OperatorsSql, db.prepare<Record<string, unknown>, unknown>(sql).safeIntegers(true));
  const exec = <T>(op: OperatorOp<T>): T => {
    for (let next = op.next(); ; ) {
      if (next.done) return next.value;
      const { kind, sql, params } = next.value;
      const statement = prepared.get(sql)!;
      next = op.next(kind === 'run' ? statement.run(params).changes : kind === 'all' ? statement.all(params) : statement.get(params));
    }
  };
  const { write } = groupCommit(db);
  return operatorOps({
    read: async (op) => exec(op()),
    write: (op) => write(() => exec(op())),
  });
}
