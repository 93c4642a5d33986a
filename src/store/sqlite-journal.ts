import type Database from 'better-sqlite3';
import type { KeptResult, NewPayment, PaymentJournal, PaymentKey } from './journal.js';
import { type Row, finishParams, journalSql, keyParams, toRecord } from './journal-rows.js';
import { groupCommit } from './group-commit.js';
import { StoreError } from './store.js';

/** The payments journal on SQLite: every transition is one guarded UPDATE or INSERT. */
export function sqliteJournal(db: Database.Database, owner: string): PaymentJournal {
  const select = db.prepare<Record<string, unknown>, Row>(journalSql.select).safeIntegers(true);
  const insert = db.prepare(journalSql.insert('submitting'));
  const insertVerified = db.prepare(journalSql.insert('verified'));
  const takeVerified = db.prepare(journalSql.takeVerified);
  const recordTx = db.prepare(journalSql.recordTx);
  const finish = db.prepare(journalSql.finish);
  const failHold = db.prepare(journalSql.failHold);
  const answeredPending = db.prepare(journalSql.answeredPending);
  const takePendingAnswer = db.prepare(journalSql.takePendingAnswer);
  const release = db.prepare(journalSql.release);
  const releaseHold = db.prepare(journalSql.releaseHold);
  const keepResult = db.prepare(journalSql.keepResult);
  const keptResult = db.prepare<Record<string, unknown>, KeptResult>(journalSql.keptResult);
  const forgetResults = db.prepare(journalSql.forgetResults);
  const unfinished = db.prepare<[], Row>(journalSql.unfinished).safeIntegers(true);
  const unfinishedOf = db.prepare<{ owner: string | null }, Row>(journalSql.unfinishedOf).safeIntegers(true);
  const owners = db.prepare<[], { owner: string | null }>(journalSql.unfinishedOwners);

  const get = (key: PaymentKey) => {
    const row = select.get(keyParams(key));
    return row ? toRecord(row) : undefined;
  };
  const mustChange = (result: Database.RunResult, what: string, key: PaymentKey) => {
    if (result.changes !== 1) throw new StoreError(`journal: cannot ${what} ${key.payer}/${key.nonce}: not in the expected state`);
  };

  const claim = (payment: NewPayment) => {
    const now = Date.now();
    if (insert.run({ ...payment, ...keyParams(payment), owner, now }).changes === 1) return { claimed: true as const };
    if (takeVerified.run({ ...keyParams(payment), purpose: payment.purpose, owner, now }).changes === 1) return { claimed: true as const };
    return { claimed: false as const, record: get(payment)! };
  };
  // Settlement steps share commits with each other and the ledger, and sync off the event loop; a
  // hold or a kept result is not synced on its own (see PaymentJournal): the claim's sync covers it.
  const { write, unsynced } = groupCommit(db);

  return {
    async get(key) {
      return get(key);
    },
    async reserve(payment) {
      const inserted = unsynced(() => insertVerified.run({ ...payment, ...keyParams(payment), owner, now: Date.now() }).changes === 1);
      return inserted ? { reserved: true } : { reserved: false, record: get(payment)! };
    },
    claim: (payment) => write(() => claim(payment)),
    async recordTransaction(key, tx) {
      const params = { txHash: tx.txHash, rawTx: tx.rawTx, relayer: tx.relayer, relayerNonce: tx.relayerNonce };
      await write(() => mustChange(recordTx.run({ ...params, ...keyParams(key), now: Date.now() }), 'record the transaction of', key));
    },
    async finish(key, outcome) {
      await write(() => mustChange(finish.run(finishParams(key, outcome)), `mark ${outcome.state}`, key));
    },
    failHold: (key, why) => write(() => failHold.run({ ...keyParams(key), ...why, now: Date.now() }).changes === 1),
    async answeredPending(key) {
      await write(() => answeredPending.run(keyParams(key)));
    },
    takePendingAnswer: (key) => write(() => takePendingAnswer.run(keyParams(key)).changes === 1),
    async release(key) {
      await write(() => release.run(keyParams(key)));
    },
    async releaseHold(key) {
      await write(() => releaseHold.run(keyParams(key)));
    },
    async unfinished(filter) {
      return (filter ? unfinishedOf.all(filter) : unfinished.all()).map(toRecord);
    },
    async unfinishedOwners() {
      return owners.all().map((r) => r.owner);
    },
    async keepResult(key, kept) {
      unsynced(() => keepResult.run({ ...keyParams(key), ...kept }));
    },
    async keptResult(key) {
      return keptResult.get(keyParams(key));
    },
    async forgetResults(now) {
      await write(() => forgetResults.run({ now }));
    },
  };
}
