import type pg from 'pg';
import type { OperatorStore } from './operators.js';
import { type OperatorOp, type OperatorStep, operatorOps } from './operators-ops.js';
import { type OperatorsSql, lockable, operatorsSql } from './operators-rows.js';
import { type Queryable, all, named, one, run, transaction } from './pg.js';

const statements = new Map(Object.entries(operatorsSql).map(([name, sql]) => [name as OperatorsSql, named(sql)]));
// NO KEY UPDATE: it queues one operator's requests for money as FOR UPDATE would, without holding
// up the inserts (charges, servers, keys) that only take a KEY SHARE lock on the operator's row.
const locked = new Map(lockable.map((name) => [name, named(`${operatorsSql[name]} FOR NO KEY UPDATE`)]));

function perform(db: Queryable, { kind, sql, params }: OperatorStep): Promise<unknown> {
  if (kind === 'lock') return one(db, locked.get(sql)!, params);
  const statement = statements.get(sql)!;
  if (kind === 'run') return run(db, statement, params);
  return kind === 'all' ? all(db, statement, params) : one(db, statement, params);
}

async function exec<T>(db: Queryable, op: OperatorOp<T>): Promise<T> {
  for (let next = op.next(); ; next = op.next(await perform(db, next.value))) if (next.done) return next.value;
}

/**
 * Operators and their money on PostgreSQL (READ COMMITTED), the same operations as on SQLite.
 * Each write is one transaction; a request for money first locks its operator's row, so
 * requests from any number of instances queue there and none reserves what another took. Call
 * counts and subscriptions are single statements (an upsert, a guarded update) that PostgreSQL
 * applies one after the other on the row.
 */
export function postgresOperators(pool: pg.Pool): OperatorStore {
  return operatorOps({
    read: (op) => exec(pool, op()),
    write: (op) => transaction(pool, (db) => exec(db, op())),
  });
}
