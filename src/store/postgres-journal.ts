import type pg from 'pg';
import type { KeptResult, PaymentJournal, PaymentKey } from './journal.js';
import { type Row, finishParams, journalSql, keyParams, toRecord } from './journal-rows.js';
import { all, named, one, run, transaction } from './pg.js';
import { StoreError } from './store.js';

const sql = {
  select: named(journalSql.select),
  insert: named(journalSql.insert('submitting')),
  insertVerified: named(journalSql.insert('verified')),
  takeVerified: named(journalSql.takeVerified),
  recordTx: named(journalSql.recordTx),
  finish: named(journalSql.finish),
  failHold: named(journalSql.failHold),
  answeredPending: named(journalSql.answeredPending),
  takePendingAnswer: named(journalSql.takePendingAnswer),
  release: named(journalSql.release),
  releaseHold: named(journalSql.releaseHold),
  unfinished: named(journalSql.unfinished),
  unfinishedOf: named(journalSql.unfinishedOf),
  unfinishedOwners: named(journalSql.unfinishedOwners),
  keepResult: named(journalSql.keepResult),
  keptResult: named(journalSql.keptResult),
  forgetResults: named(journalSql.forgetResults),
};

/**
 * The payments journal on PostgreSQL: the same guarded statements as on SQLite. Under READ
 * COMMITTED a concurrent INSERT of the same key waits for the first to commit and then does
 * nothing, and a guarded UPDATE re-checks its WHERE on the row it locked: exactly one caller
 * reserves or claims a payment, across every instance on the database.
 */
export function postgresJournal(pool: pg.Pool, owner: string): PaymentJournal {
  const get = async (db: pg.Pool | pg.PoolClient, key: PaymentKey) => {
    const row = await one<Row>(db, sql.select, keyParams(key));
    return row ? toRecord(row) : undefined;
  };
  const mustChange = (changed: number, what: string, key: PaymentKey) => {
    if (changed !== 1) throw new StoreError(`journal: cannot ${what} ${key.payer}/${key.nonce}: not in the expected state`);
  };

  return {
    get: (key) => get(pool, key),
    async reserve(payment) {
      if ((await run(pool, sql.insertVerified, { ...payment, ...keyParams(payment), owner, now: Date.now() })) === 1) return { reserved: true };
      return { reserved: false, record: (await get(pool, payment))! };
    },
    claim: (payment) =>
      transaction(pool, async (db) => {
        const now = Date.now();
        if ((await run(db, sql.insert, { ...payment, ...keyParams(payment), owner, now })) === 1) return { claimed: true as const };
        const taken = await run(db, sql.takeVerified, { ...keyParams(payment), purpose: payment.purpose, owner, now });
        if (taken === 1) return { claimed: true as const };
        return { claimed: false as const, record: (await get(db, payment))! };
      }),
    async recordTransaction(key, tx) {
      const params = { txHash: tx.txHash, rawTx: tx.rawTx, relayer: tx.relayer, relayerNonce: tx.relayerNonce };
      mustChange(await run(pool, sql.recordTx, { ...params, ...keyParams(key), now: Date.now() }), 'record the transaction of', key);
    },
    async finish(key, outcome) {
      mustChange(await run(pool, sql.finish, finishParams(key, outcome)), `mark ${outcome.state}`, key);
    },
    failHold: async (key, why) => (await run(pool, sql.failHold, { ...keyParams(key), ...why, now: Date.now() })) === 1,
    async answeredPending(key) {
      await run(pool, sql.answeredPending, keyParams(key));
    },
    takePendingAnswer: async (key) => (await run(pool, sql.takePendingAnswer, keyParams(key))) === 1,
    async release(key) {
      await run(pool, sql.release, keyParams(key));
    },
    async releaseHold(key) {
      await run(pool, sql.releaseHold, keyParams(key));
    },
    async unfinished(filter) {
      return (await (filter ? all<Row>(pool, sql.unfinishedOf, filter) : all<Row>(pool, sql.unfinished))).map(toRecord);
    },
    async unfinishedOwners() {
      return (await all<{ owner: string | null }>(pool, sql.unfinishedOwners)).map((r) => r.owner);
    },
    async keepResult(key, kept) {
      await run(pool, sql.keepResult, { ...keyParams(key), ...kept });
    },
    keptResult: (key) => one<KeptResult>(pool, sql.keptResult, keyParams(key)),
    async forgetResults(now) {
      await run(pool, sql.forgetResults, { now });
    },
  };
}
